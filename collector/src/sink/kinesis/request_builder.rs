//! Packs records into PutRecords requests within the Kinesis limits.

use super::limits::{MAX_RECORDS_PER_REQUEST, MAX_REQUEST_BYTES};

use super::record::Entry;

/// Splits `entries` (each with its index in the upload) into request-sized groups, keeping
/// order: at most [`MAX_RECORDS_PER_REQUEST`] records and [`MAX_REQUEST_BYTES`] each.
pub fn build_requests(entries: Vec<(usize, Entry)>) -> Vec<Vec<(usize, Entry)>> {
    let mut requests = Vec::new();
    let mut current: Vec<(usize, Entry)> = Vec::new();
    let mut bytes = 0;
    for (index, entry) in entries {
        let size = entry.size();
        if !current.is_empty()
            && (current.len() == MAX_RECORDS_PER_REQUEST || bytes + size > MAX_REQUEST_BYTES)
        {
            requests.push(std::mem::take(&mut current));
            bytes = 0;
        }
        bytes += size;
        current.push((index, entry));
    }
    if !current.is_empty() {
        requests.push(current);
    }
    requests
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn entry(len: usize) -> Entry {
        Entry {
            data: Bytes::from(vec![b'x'; len]),
            partition_key: "p".into(),
        }
    }

    #[test]
    fn respects_count_and_byte_limits_in_order() {
        let entries: Vec<_> = (0..1201).map(|i| (i, entry(10))).collect();
        let requests = build_requests(entries);
        assert_eq!(
            requests.iter().map(Vec::len).collect::<Vec<_>>(),
            vec![500, 500, 201]
        );
        assert_eq!(requests[1][0].0, 500);

        let big = MAX_REQUEST_BYTES / 3;
        let entries: Vec<_> = (0..4).map(|i| (i, entry(big))).collect();
        let requests = build_requests(entries);
        assert_eq!(
            requests.iter().map(Vec::len).collect::<Vec<_>>(),
            vec![2, 2]
        );
        for r in &requests {
            assert!(r.iter().map(|(_, e)| e.size()).sum::<usize>() <= MAX_REQUEST_BYTES);
        }
    }
}
