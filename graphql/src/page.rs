//! Relay-style cursor pagination: `first` (at most 100, 20 when absent) and `after` (an opaque cursor, the
//! sort key of the last row seen). Keyset pagination: a page costs the same deep in a million rows as on
//! the first page.

use async_graphql::connection::{Connection, Edge};
use async_graphql::OutputType;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::Value;

use crate::error::ApiError;

pub const DEFAULT_PAGE: usize = 20;
pub const MAX_PAGE: usize = 100;

#[derive(Debug, Clone)]
pub struct Page {
    pub first: usize,
    /// The sort key after which the page starts.
    pub after: Option<Vec<Value>>,
}

impl Page {
    pub fn new(first: Option<i32>, after: Option<String>) -> Result<Self, ApiError> {
        let first = match first {
            None => DEFAULT_PAGE,
            Some(n) if n >= 0 && (n as usize) <= MAX_PAGE => n as usize,
            Some(_) => return Err(ApiError::invalid_field("first", format!("first must be 0 to {MAX_PAGE}"))),
        };
        let after = after.map(|cursor| decode(&cursor)).transpose()?;
        Ok(Self { first, after })
    }

    /// Rows to fetch: one more than the page, to know whether another page follows.
    pub fn limit(&self) -> i64 {
        self.first as i64 + 1
    }

    /// The key value at `i` of the `after` cursor.
    pub fn key(&self, i: usize) -> Option<&Value> {
        self.after.as_ref().and_then(|key| key.get(i))
    }
}

fn decode(cursor: &str) -> Result<Vec<Value>, ApiError> {
    let bad = || ApiError::invalid_field("after", "not a cursor this API gave out");
    let bytes = URL_SAFE_NO_PAD.decode(cursor).map_err(|_| bad())?;
    serde_json::from_slice(&bytes).map_err(|_| bad())
}

pub fn encode(key: &[Value]) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(key).unwrap_or_default())
}

/// A connection of at most `page.first` rows (of `page.limit()` fetched), each with its cursor.
pub fn connection<T: OutputType>(
    page: &Page,
    mut rows: Vec<T>,
    key: impl Fn(&T) -> Vec<Value>,
) -> Connection<String, T> {
    let has_next = rows.len() > page.first;
    rows.truncate(page.first);
    let mut connection = Connection::new(page.after.is_some(), has_next);
    connection.edges.extend(rows.into_iter().map(|row| Edge::new(encode(&key(&row)), row)));
    connection
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_strangers_are_refused() {
        let key = vec![Value::from("2026-12-02T10:00:00Z"), Value::from("0192")];
        let page = Page::new(Some(5), Some(encode(&key))).expect("page");
        assert_eq!(page.after, Some(key));
        assert_eq!(page.limit(), 6);
        assert!(Page::new(None, Some("not-a-cursor!".into())).is_err());
        assert!(Page::new(Some(101), None).is_err());
        assert!(Page::new(Some(-1), None).is_err());
        assert_eq!(Page::new(None, None).expect("page").first, DEFAULT_PAGE);
    }
}
