//! Cursor pagination as API.md defines it: `?limit=` (default 20, at most 100) and
//! `?starting_after=<id>`, answered with `{data, has_more, next_cursor}`, newest first.
//!
//! Ids are UUIDv7, so "newest first" is "id descending" and the cursor is simply the last
//! id of the page: `WHERE id < $cursor ORDER BY id DESC LIMIT $limit + 1`. The extra row
//! tells whether there is a next page without a second query.

use serde::{Deserialize, Serialize};

use crate::problem::ApiError;

pub const PAGE_SIZE_DEFAULT: u32 = 20;
pub const PAGE_SIZE_MAX: u32 = 100;

#[derive(Debug, Clone, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// Page size, 1 to 100 (default 20).
    pub limit: Option<u32>,
    /// The id of the last item of the previous page.
    pub starting_after: Option<String>,
}

#[derive(Debug, Clone, Copy)]
pub struct PageRequest<Cursor> {
    pub limit: u32,
    pub starting_after: Option<Cursor>,
}

impl<Cursor> PageRequest<Cursor> {
    /// Rows to fetch: one more than the page, to learn whether another page follows.
    pub fn fetch_limit(&self) -> i64 {
        i64::from(self.limit) + 1
    }
}

impl ListParams {
    /// Validates the page size and parses the cursor with `parse_cursor`.
    pub fn page<Cursor>(
        &self,
        parse_cursor: impl FnOnce(&str) -> Option<Cursor>,
    ) -> Result<PageRequest<Cursor>, ApiError> {
        let limit = self.limit.unwrap_or(PAGE_SIZE_DEFAULT);
        if !(1..=PAGE_SIZE_MAX).contains(&limit) {
            return Err(ApiError::invalid("limit", format!("limit must be between 1 and {PAGE_SIZE_MAX}.")));
        }
        let starting_after = match self.starting_after.as_deref() {
            None => None,
            Some(text) => Some(
                parse_cursor(text)
                    .ok_or_else(|| ApiError::invalid("starting_after", "starting_after is not an id of this list."))?,
            ),
        };
        Ok(PageRequest { limit, starting_after })
    }
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Page<T> {
    pub data: Vec<T>,
    pub has_more: bool,
    /// Pass as `starting_after` to get the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

impl<T> Page<T> {
    /// Builds a page from up to `limit + 1` rows fetched newest first.
    pub fn from_rows(mut rows: Vec<T>, limit: u32, cursor_of: impl Fn(&T) -> String) -> Page<T> {
        let limit = limit as usize;
        let has_more = rows.len() > limit;
        rows.truncate(limit);
        let next_cursor = if has_more { rows.last().map(&cursor_of) } else { None };
        Page { data: rows, has_more, next_cursor }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_know_whether_more_follow() {
        let page = Page::from_rows(vec![5, 4, 3], 2, |n| n.to_string());
        assert_eq!(page.data, vec![5, 4]);
        assert!(page.has_more);
        assert_eq!(page.next_cursor.as_deref(), Some("4"));
        let last = Page::from_rows(vec![2, 1], 2, |n| n.to_string());
        assert!(!last.has_more);
        assert_eq!(last.next_cursor, None);
    }

    #[test]
    fn limits_are_enforced() {
        let params = |limit| ListParams { limit: Some(limit), starting_after: None };
        assert!(params(0).page(|_| Some(())).is_err());
        assert!(params(101).page(|_| Some(())).is_err());
        assert_eq!(params(100).page(|_| Some(())).map(|p| p.limit), Ok(100));
        let bad_cursor = ListParams { limit: None, starting_after: Some("x".into()) };
        assert!(bad_cursor.page(|_| None::<()>).is_err());
    }
}
