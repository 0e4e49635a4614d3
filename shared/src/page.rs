//! One page of the run snapshot: which of its rows became safe (committed
//! in Postgres or accepted by SQS), and the ranges of snapshot numbers the
//! join delete names for them.

use crate::model::row::SourceRow;
use crate::ports::{IdMatch, RowNumbers};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mark {
    /// Stays in Snowflake: deferred, held back, or not accepted by the queue.
    Unsafe,
    Safe,
    /// Safe, and its id is NULL (deleted by its own statement).
    SafeWithoutId,
}

/// The rows of one page, by snapshot number.
pub(crate) struct Page {
    first: u64,
    marks: Vec<Mark>,
}

impl Page {
    pub(crate) fn new(first: u64, rows: usize) -> Self {
        Self {
            first,
            marks: vec![Mark::Unsafe; rows],
        }
    }

    /// Row `number` (with content `row`) is safe to delete.
    pub(crate) fn mark_safe(&mut self, number: u64, row: &SourceRow) {
        self.mark_safe_keyed(number, row.country_id.is_none());
    }

    /// Row `number`, whose key is NULL or not, is safe to delete.
    pub(crate) fn mark_safe_keyed(&mut self, number: u64, key_null: bool) {
        let mark = if !key_null {
            Mark::Safe
        } else {
            Mark::SafeWithoutId
        };
        let slot = number
            .checked_sub(self.first)
            .and_then(|i| usize::try_from(i).ok())
            .and_then(|i| self.marks.get_mut(i));
        debug_assert!(slot.is_some(), "row {number} is not on the page");
        if let Some(slot) = slot {
            *slot = mark;
        }
    }

    /// The safe rows matched by `ids`, as maximal ranges of numbers: one
    /// range for a page without trouble, none when nothing is safe.
    pub(crate) fn safe_ranges(&self, ids: IdMatch) -> Vec<RowNumbers> {
        let wanted = match ids {
            IdMatch::Equal => Mark::Safe,
            IdMatch::BothNull => Mark::SafeWithoutId,
        };
        let mut ranges = Vec::new();
        let mut open: Option<u64> = None;
        for (number, mark) in (self.first..).zip(&self.marks) {
            match (open, *mark == wanted) {
                (None, true) => open = Some(number),
                (Some(start), false) => {
                    ranges.push(start..=number - 1);
                    open = None;
                }
                _ => {}
            }
        }
        if let Some(start) = open {
            ranges.push(start..=self.first + self.marks.len() as u64 - 1);
        }
        ranges
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn safe_rows_become_maximal_ranges_per_kind() {
        let with_id = SourceRow::new(Some(1), Some("USA"));
        let without = SourceRow::new(None, Some("USA"));
        let mut page = Page::new(101, 8);
        for n in [101, 102, 103, 105, 108] {
            page.mark_safe(n, &with_id);
        }
        page.mark_safe(106, &without);
        page.mark_safe(107, &without);
        assert_eq!(
            page.safe_ranges(IdMatch::Equal),
            vec![101..=103, 105..=105, 108..=108]
        );
        assert_eq!(page.safe_ranges(IdMatch::BothNull), vec![106..=107]);
        assert!(Page::new(1, 5).safe_ranges(IdMatch::Equal).is_empty());
        let mut all = Page::new(1, 3);
        for n in 1..=3 {
            all.mark_safe(n, &with_id);
        }
        assert_eq!(all.safe_ranges(IdMatch::Equal), vec![1..=3]);
    }
}
