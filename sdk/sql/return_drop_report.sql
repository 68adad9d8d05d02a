-- Drop counts a batch carried go back to those not yet reported (its total was counted already).
INSERT INTO drops (reason, total, unreported) VALUES (?1, 0, ?2)
ON CONFLICT(reason) DO UPDATE SET unreported = unreported + excluded.unreported
