//! Helpers for executing the domain's paging plan in SQL.

use weft_domain::{Cursor, ListParams};

/// The id a list's cursor names, whichever side it is on.
pub fn cursor_id<I>(params: &ListParams<I>) -> Option<&I> {
    params.cursor().map(|c| match c {
        Cursor::After(i) | Cursor::Before(i) => i,
    })
}
