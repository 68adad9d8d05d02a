INSERT INTO gap_totals (reason, seqs) VALUES (?1, ?2)
ON CONFLICT(reason) DO UPDATE SET seqs = seqs + excluded.seqs
