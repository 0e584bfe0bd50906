//! Request ids: kept from the client's `x-request-id` when it is sane, otherwise minted.

use std::fmt;

/// Longest client-supplied id we keep; longer ones are replaced so logs stay bounded.
pub const MAX_REQUEST_ID_LEN: usize = 128;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RequestId(String);

impl RequestId {
    /// Keeps the client's id if it is short printable ASCII, otherwise mints a fresh one.
    pub fn from_client_or_new(client: Option<&[u8]>) -> Self {
        match client {
            Some(raw)
                if !raw.is_empty()
                    && raw.len() <= MAX_REQUEST_ID_LEN
                    && raw.iter().all(|b| b.is_ascii_graphic()) =>
            {
                Self(String::from_utf8_lossy(raw).into_owned())
            }
            _ => Self::new(),
        }
    }

    /// A fresh time-ordered id, so ids sort by arrival in logs and the ledger.
    pub fn new() -> Self {
        Self(format!("req_{}", uuid::Uuid::now_v7().simple()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for RequestId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_sane_client_ids_and_replaces_others() {
        assert_eq!(
            RequestId::from_client_or_new(Some(b"abc-123")).as_str(),
            "abc-123"
        );
        assert!(RequestId::from_client_or_new(Some(b"has space"))
            .as_str()
            .starts_with("req_"));
        assert!(RequestId::from_client_or_new(Some(&[b'a'; 200]))
            .as_str()
            .starts_with("req_"));
        assert!(RequestId::from_client_or_new(None)
            .as_str()
            .starts_with("req_"));
    }
}
