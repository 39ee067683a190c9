//! List parameters as validated types, and the one paging plan every
//! adapter executes, so all adapters page identically.

use crate::IdError;

/// Default page size.
pub const DEFAULT_LIMIT: u8 = 20;
/// Largest page size.
pub const MAX_LIMIT: u8 = 100;

/// List parameters broke a rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ListError {
    /// `limit` out of 1–100 or not a number.
    #[error("limit must be an integer from 1 to {MAX_LIMIT}")]
    Limit,
    /// `order` other than `asc`/`desc`.
    #[error("order must be 'asc' or 'desc'")]
    Order,
    /// A cursor that is not an id of this list's kind.
    #[error("invalid cursor: {0}")]
    Cursor(#[from] IdError),
}

/// A page size, 1–100.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageLimit(u8);

impl Default for PageLimit {
    fn default() -> Self {
        Self(DEFAULT_LIMIT)
    }
}

impl PageLimit {
    /// Validates a page size.
    ///
    /// # Errors
    /// [`ListError::Limit`] outside 1–100.
    pub fn new(n: i64) -> Result<Self, ListError> {
        u8::try_from(n)
            .ok()
            .filter(|n| (1..=MAX_LIMIT).contains(n))
            .map(Self)
            .ok_or(ListError::Limit)
    }

    /// The page size.
    pub fn get(self) -> u8 {
        self.0
    }
}

/// List order by id (creation order).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Order {
    /// Oldest first.
    Asc,
    /// Newest first (the default).
    #[default]
    Desc,
}

impl Order {
    /// Parses `asc` or `desc`.
    ///
    /// # Errors
    /// [`ListError::Order`] for anything else.
    pub fn parse(s: &str) -> Result<Self, ListError> {
        match s {
            "asc" => Ok(Self::Asc),
            "desc" => Ok(Self::Desc),
            _ => Err(ListError::Order),
        }
    }

    fn reversed(self) -> Self {
        match self {
            Self::Asc => Self::Desc,
            Self::Desc => Self::Asc,
        }
    }
}

/// Validated list parameters for a list of objects identified by `I`
/// (API.md, "Lists").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListParams<I> {
    limit: PageLimit,
    order: Order,
    after: Option<I>,
    before: Option<I>,
}

impl<I> Default for ListParams<I> {
    fn default() -> Self {
        Self {
            limit: PageLimit::default(),
            order: Order::default(),
            after: None,
            before: None,
        }
    }
}

/// The query an adapter runs for a page: `WHERE id > above AND id < below
/// ORDER BY id <scan> LIMIT fetch` (each bound only when present, both
/// strict), then [`PagePlan::finish`]: keep `limit` rows (more means
/// `has_more`) and reverse them if `reverse`. Every adapter executes this
/// one plan, so all page alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PagePlan<'p, I> {
    /// Only ids greater than this one.
    pub above: Option<&'p I>,
    /// Only ids less than this one.
    pub below: Option<&'p I>,
    /// The scan order of the query.
    pub scan: Order,
    /// Rows to fetch: one more than the page, to learn `has_more`.
    pub fetch: u32,
    /// Rows to keep.
    pub limit: usize,
    /// Whether the kept rows must be reversed into the requested order.
    pub reverse: bool,
}

impl<I> ListParams<I> {
    /// Assembles list parameters from already-typed parts. `after` and
    /// `before` together select the objects strictly between them (API.md:
    /// the official SDKs send both when they page on from a `before` list).
    pub fn new(limit: PageLimit, order: Order, after: Option<I>, before: Option<I>) -> Self {
        Self {
            limit,
            order,
            after,
            before,
        }
    }

    /// Parses raw query values; `parse_id` parses a cursor id of this list's kind.
    ///
    /// # Errors
    /// [`ListError`] for the first broken rule.
    pub fn parse(
        limit: Option<&str>,
        order: Option<&str>,
        after: Option<&str>,
        before: Option<&str>,
        parse_id: impl Fn(&str) -> Result<I, IdError>,
    ) -> Result<Self, ListError> {
        let limit = match limit {
            None => PageLimit::default(),
            Some(s) => PageLimit::new(s.trim().parse::<i64>().map_err(|_| ListError::Limit)?)?,
        };
        let order = order.map(Order::parse).transpose()?.unwrap_or_default();
        let after = after.map(&parse_id).transpose()?;
        let before = before.map(&parse_id).transpose()?;
        Ok(Self::new(limit, order, after, before))
    }

    /// The page size.
    pub fn limit(&self) -> PageLimit {
        self.limit
    }

    /// The requested order.
    pub fn order(&self) -> Order {
        self.order
    }

    /// The `after` cursor, if any.
    pub fn after(&self) -> Option<&I> {
        self.after.as_ref()
    }

    /// The `before` cursor, if any.
    pub fn before(&self) -> Option<&I> {
        self.before.as_ref()
    }

    /// Every cursor given (none, one or two): each must name an object of
    /// the list (API.md: else 400), deleted ones included.
    pub fn cursors(&self) -> impl Iterator<Item = &I> {
        self.after.iter().chain(self.before.iter())
    }

    /// The query plan implementing the API's paging rules.
    ///
    /// - no cursor: the first objects in the chosen order;
    /// - `after`: the first objects past it in the chosen order;
    /// - `before`: the objects nearest before it — scanned away from it in
    ///   the reverse order, then flipped back into the chosen order;
    /// - both: the objects strictly between them, paged from the `after`
    ///   side (crossed or equal cursors select nothing).
    pub fn plan(&self) -> PagePlan<'_, I> {
        let (after, before) = (self.after.as_ref(), self.before.as_ref());
        let (above, below) = match self.order {
            Order::Asc => (after, before),
            Order::Desc => (before, after),
        };
        let (scan, reverse) = match (after, before) {
            (None, Some(_)) => (self.order.reversed(), true),
            _ => (self.order, false),
        };
        PagePlan {
            above,
            below,
            scan,
            fetch: u32::from(self.limit.get()) + 1,
            limit: usize::from(self.limit.get()),
            reverse,
        }
    }
}

impl<I> PagePlan<'_, I> {
    /// Turns the fetched rows (in scan order) into the page.
    pub fn finish<T>(&self, mut rows: Vec<T>) -> Page<T> {
        let has_more = rows.len() > self.limit;
        rows.truncate(self.limit);
        if self.reverse {
            rows.reverse();
        }
        Page {
            items: rows,
            has_more,
        }
    }
}

/// One page of a list.
#[derive(Debug, Clone, PartialEq)]
pub struct Page<T> {
    /// The objects, in the requested order.
    pub items: Vec<T>,
    /// Whether more objects lie beyond the page in the direction of travel.
    pub has_more: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn parse(
        limit: Option<&str>,
        order: Option<&str>,
        after: Option<&str>,
        before: Option<&str>,
    ) -> Result<ListParams<u32>, ListError> {
        ListParams::parse(limit, order, after, before, |s| {
            s.parse::<u32>().map_err(|_| IdError::Request)
        })
    }

    #[test]
    fn defaults_are_twenty_newest_first() {
        let p = parse(None, None, None, None).unwrap();
        assert_eq!(p.limit().get(), 20);
        assert_eq!(p.order(), Order::Desc);
        assert_eq!(p.cursors().count(), 0);
    }

    #[test]
    fn bad_values_are_refused() {
        for (l, o) in [
            (Some("0"), None),
            (Some("101"), None),
            (Some("-1"), None),
            (Some("ten"), None),
            (None, Some("up")),
        ] {
            assert!(parse(l, o, None, None).is_err(), "{l:?} {o:?}");
        }
        let both = parse(None, None, Some("1"), Some("2")).unwrap();
        assert_eq!(both.cursors().copied().collect::<Vec<_>>(), vec![1, 2]);
        assert!(matches!(
            parse(None, None, Some("x"), None),
            Err(ListError::Cursor(_))
        ));
    }

    /// Runs a plan over a sorted model of ids the way an adapter's SQL would.
    fn run(ids: &[u32], p: &ListParams<u32>) -> Page<u32> {
        let plan = p.plan();
        let mut rows: Vec<u32> = ids
            .iter()
            .copied()
            .filter(|id| plan.above.is_none_or(|a| id > a) && plan.below.is_none_or(|b| id < b))
            .collect();
        rows.sort_unstable();
        if plan.scan == Order::Desc {
            rows.reverse();
        }
        rows.truncate(plan.fetch as usize);
        plan.finish(rows)
    }

    proptest! {
        #[test]
        fn paging_forward_with_after_yields_every_id_exactly_once(n in 0u32..60, limit in 1i64..15, asc: bool) {
            let ids: Vec<u32> = (0..n).map(|i| i * 2).collect();
            let order = if asc { Order::Asc } else { Order::Desc };
            let mut seen = Vec::new();
            let mut after = None;
            loop {
                let p = ListParams::new(PageLimit::new(limit).unwrap(), order, after, None);
                let page = run(&ids, &p);
                seen.extend(page.items.iter().copied());
                if !page.has_more { break; }
                after = page.items.last().copied();
            }
            let mut expected = ids.clone();
            if !asc { expected.reverse(); }
            prop_assert_eq!(seen, expected);
        }

        #[test]
        fn before_returns_the_nearest_objects_in_the_chosen_order(n in 1u32..40, at in 0u32..40, limit in 1i64..10, asc: bool) {
            let ids: Vec<u32> = (0..n).collect();
            let order = if asc { Order::Asc } else { Order::Desc };
            let p = ListParams::new(PageLimit::new(limit).unwrap(), order, None, Some(at));
            let page = run(&ids, &p);
            // Model: the objects before `at` in the chosen order, nearest `limit` of them.
            let mut in_order = ids.clone();
            if !asc { in_order.reverse(); }
            // The cursor need not exist (a deleted object keeps its position).
            let before: Vec<u32> = in_order.iter().copied().filter(|i| if asc { *i < at } else { *i > at }).collect();
            let start = before.len().saturating_sub(limit as usize);
            prop_assert_eq!(&page.items[..], &before[start..]);
            prop_assert_eq!(page.has_more, start > 0);
        }

        /// The SDKs' iteration from a `before` list: page on with `after` =
        /// the last id seen and the original `before` kept. The window
        /// between the two cursors yields every object strictly between
        /// them exactly once, in the chosen order.
        #[test]
        fn after_and_before_together_page_through_the_window_between_them(
            n in 0u32..60, a in 0u32..60, b in 0u32..60, limit in 1i64..15, asc: bool,
        ) {
            let ids: Vec<u32> = (0..n).collect();
            let order = if asc { Order::Asc } else { Order::Desc };
            let mut seen = Vec::new();
            let mut after = a;
            loop {
                let p = ListParams::new(PageLimit::new(limit).unwrap(), order, Some(after), Some(b));
                let page = run(&ids, &p);
                seen.extend(page.items.iter().copied());
                match page.items.last() {
                    Some(last) if page.has_more => after = *last,
                    _ => break,
                }
            }
            let mut expected: Vec<u32> = ids
                .iter()
                .copied()
                .filter(|i| if asc { *i > a && *i < b } else { *i < a && *i > b })
                .collect();
            if !asc { expected.reverse(); }
            prop_assert_eq!(seen, expected);
        }
    }
}
