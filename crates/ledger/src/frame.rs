//! The spool's on-disk record framing: `[len: u32 LE][crc32 of payload: u32 LE][payload]`,
//! the payload being one JSON-encoded [`UsageRecord`].

use std::io::{self, Read};

use crate::error::LedgerError;
use crate::record::UsageRecord;

pub(crate) const HEADER_BYTES: usize = 8;

/// Largest encoded record. A usage record is a few hundred bytes; the cap bounds what a
/// corrupt length prefix can make the reader allocate, and rejects runaway tag maps.
pub const MAX_RECORD_BYTES: usize = 256 * 1024;

pub(crate) fn encode(record: &UsageRecord) -> Result<Vec<u8>, LedgerError> {
    let mut frame = vec![0; HEADER_BYTES];
    serde_json::to_writer(&mut frame, record)?;
    let payload_len = frame.len() - HEADER_BYTES;
    if payload_len > MAX_RECORD_BYTES {
        return Err(LedgerError::RecordTooLarge {
            request_id: record.request_id.clone(),
            bytes: payload_len,
        });
    }
    let crc = crc32fast::hash(&frame[HEADER_BYTES..]);
    // `payload_len <= MAX_RECORD_BYTES` fits in u32.
    frame[..4].copy_from_slice(&(payload_len as u32).to_le_bytes());
    frame[4..HEADER_BYTES].copy_from_slice(&crc.to_le_bytes());
    Ok(frame)
}

/// What the reader found at its position.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Frame {
    /// A whole frame with a matching checksum; `len` counts header and payload.
    Whole { payload: Vec<u8>, len: u64 },
    /// Nothing left.
    End,
    /// A frame cut short, a zero or impossible length, or a checksum mismatch: what a
    /// crash mid-write (or a zero-filled tail after power loss) leaves.
    Broken,
}

pub(crate) fn read(reader: &mut impl Read) -> io::Result<Frame> {
    let mut header = [0u8; HEADER_BYTES];
    let got = read_full(reader, &mut header)?;
    if got == 0 {
        return Ok(Frame::End);
    }
    if got < HEADER_BYTES {
        return Ok(Frame::Broken);
    }
    let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
    let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    // A zero length must be refused: the crc32 of nothing is 0, so a zero-filled tail
    // would otherwise read as a run of valid empty frames.
    if len == 0 || len > MAX_RECORD_BYTES {
        return Ok(Frame::Broken);
    }
    let mut payload = vec![0u8; len];
    if read_full(reader, &mut payload)? < len || crc32fast::hash(&payload) != crc {
        return Ok(Frame::Broken);
    }
    Ok(Frame::Whole {
        payload,
        len: (HEADER_BYTES + len) as u64,
    })
}

/// Reads until `buf` is full or the input ends; returns how many bytes were read.
fn read_full(reader: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => return Err(err),
        }
    }
    Ok(filled)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::record;

    #[test]
    fn round_trip_and_damage() {
        let frame = encode(&record("r1", 0)).unwrap();
        let Frame::Whole { payload, len } = read(&mut &frame[..]).unwrap() else {
            panic!("not whole");
        };
        assert_eq!(len, frame.len() as u64);
        let back: UsageRecord = serde_json::from_slice(&payload).unwrap();
        assert_eq!(back, record("r1", 0));

        assert_eq!(read(&mut &[][..]).unwrap(), Frame::End);
        for cut in [1, 7, 8, frame.len() - 1] {
            assert_eq!(
                read(&mut &frame[..cut]).unwrap(),
                Frame::Broken,
                "cut {cut}"
            );
        }
        let mut flipped = frame.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        assert_eq!(read(&mut &flipped[..]).unwrap(), Frame::Broken);
        assert_eq!(read(&mut &[0u8; 64][..]).unwrap(), Frame::Broken);
    }

    #[test]
    fn oversized_records_are_refused() {
        let mut big = record("big", 0);
        big.tags.insert("blob".into(), "x".repeat(MAX_RECORD_BYTES));
        assert!(matches!(
            encode(&big),
            Err(LedgerError::RecordTooLarge { .. })
        ));
    }
}
