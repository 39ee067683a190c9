//! OpenAI metadata: a small string-to-string map with hard limits, and the
//! merge that `modify` applies.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::text::{check_text, TextError};

/// Most pairs a metadata map may hold (after a merge too).
pub const MAX_PAIRS: usize = 16;
/// Longest key, in characters.
pub const MAX_KEY_CHARS: usize = 64;
/// Longest value, in characters.
pub const MAX_VALUE_CHARS: usize = 512;

/// Metadata broke a limit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MetadataError {
    /// More than [`MAX_PAIRS`] pairs.
    #[error("metadata may hold at most {MAX_PAIRS} pairs, got {0}")]
    TooManyPairs(usize),
    /// A key or value broke its length or character rule.
    #[error(transparent)]
    Text(#[from] TextError),
}

fn check_key(k: &str) -> Result<(), MetadataError> {
    Ok(check_text("metadata key", k, 1, MAX_KEY_CHARS)?)
}

fn check_value(v: &str) -> Result<(), MetadataError> {
    Ok(check_text("metadata value", v, 0, MAX_VALUE_CHARS)?)
}

/// A valid metadata map: at most 16 pairs, keys 1–64 characters, values at
/// most 512 characters, no U+0000 anywhere. Ordered by key so it serialises
/// deterministically.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Metadata(BTreeMap<String, String>);

impl Metadata {
    /// Validates a complete map.
    ///
    /// # Errors
    /// [`MetadataError`] for the first broken limit.
    pub fn parse(map: BTreeMap<String, String>) -> Result<Self, MetadataError> {
        if map.len() > MAX_PAIRS {
            return Err(MetadataError::TooManyPairs(map.len()));
        }
        for (k, v) in &map {
            check_key(k)?;
            check_value(v)?;
        }
        Ok(Self(map))
    }

    /// The pairs, ordered by key.
    pub fn as_map(&self) -> &BTreeMap<String, String> {
        &self.0
    }

    /// Applies a patch: its keys are set, its `null` keys removed, and the
    /// result must still hold at most 16 pairs. `self` is left unchanged.
    ///
    /// # Errors
    /// [`MetadataError::TooManyPairs`] when the merged map is too large.
    pub fn merged(&self, patch: &MetadataPatch) -> Result<Self, MetadataError> {
        let mut out = self.0.clone();
        for (k, v) in &patch.0 {
            match v {
                Some(v) => {
                    out.insert(k.clone(), v.clone());
                }
                None => {
                    out.remove(k);
                }
            }
        }
        if out.len() > MAX_PAIRS {
            return Err(MetadataError::TooManyPairs(out.len()));
        }
        Ok(Self(out))
    }
}

/// A metadata change from a `modify` body: `Some` sets a key, `None` (JSON
/// `null`) removes it. Each key and value obeys the metadata rules; the pair
/// limit is checked on the merged result, see [`Metadata::merged`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MetadataPatch(BTreeMap<String, Option<String>>);

impl MetadataPatch {
    /// Validates a patch.
    ///
    /// # Errors
    /// [`MetadataError`] when a key or value breaks its rule. A patch may
    /// name more than 16 keys only if enough of them are removals; that is
    /// decided by the merge.
    pub fn parse(map: BTreeMap<String, Option<String>>) -> Result<Self, MetadataError> {
        for (k, v) in &map {
            check_key(k)?;
            if let Some(v) = v {
                check_value(v)?;
            }
        }
        Ok(Self(map))
    }

    /// The changes, ordered by key.
    pub fn as_map(&self) -> &BTreeMap<String, Option<String>> {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::collection::btree_map;
    use proptest::option;
    use proptest::prelude::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn limits_are_enforced_on_create() {
        let sixteen: BTreeMap<_, _> = (0..16).map(|i| (format!("k{i}"), "v".into())).collect();
        assert!(Metadata::parse(sixteen.clone()).is_ok());
        let mut seventeen = sixteen;
        seventeen.insert("k16".into(), "v".into());
        assert_eq!(
            Metadata::parse(seventeen),
            Err(MetadataError::TooManyPairs(17))
        );
        assert!(Metadata::parse(map(&[("", "v")])).is_err());
        assert!(Metadata::parse(map(&[(&"k".repeat(65), "v")])).is_err());
        assert!(Metadata::parse(map(&[(&"k".repeat(64), &"v".repeat(512))])).is_ok());
        assert!(Metadata::parse(map(&[("k", &"v".repeat(513))])).is_err());
        assert!(Metadata::parse(map(&[("k", "a\0")])).is_err());
    }

    #[test]
    fn merge_sets_overwrites_and_removes() {
        let base = Metadata::parse(map(&[("a", "1"), ("b", "2")])).unwrap();
        let patch = MetadataPatch::parse(
            [
                ("b".to_string(), None),
                ("c".to_string(), Some("3".to_string())),
                ("a".to_string(), Some("9".to_string())),
            ]
            .into_iter()
            .collect(),
        )
        .unwrap();
        assert_eq!(
            base.merged(&patch).unwrap(),
            Metadata::parse(map(&[("a", "9"), ("c", "3")])).unwrap()
        );
    }

    #[test]
    fn the_pair_limit_applies_to_the_merged_result() {
        let full: BTreeMap<_, _> = (0..16).map(|i| (format!("k{i}"), "v".into())).collect();
        let base = Metadata::parse(full).unwrap();
        let add = MetadataPatch::parse(
            [("new".to_string(), Some("v".to_string()))]
                .into_iter()
                .collect(),
        )
        .unwrap();
        assert_eq!(base.merged(&add), Err(MetadataError::TooManyPairs(17)));
        let swap = MetadataPatch::parse(
            [
                ("new".to_string(), Some("v".to_string())),
                ("k0".to_string(), None),
            ]
            .into_iter()
            .collect(),
        )
        .unwrap();
        assert_eq!(base.merged(&swap).unwrap().as_map().len(), 16);
    }

    proptest! {
        #[test]
        fn merge_agrees_with_a_model(
            base in btree_map("[a-e]{1,2}", "[a-z]{0,3}", 0..8),
            patch in btree_map("[a-e]{1,2}", option::of("[a-z]{0,3}"), 0..8),
        ) {
            let m = Metadata::parse(base.clone()).unwrap();
            let p = MetadataPatch::parse(patch.clone()).unwrap();
            let mut model = base;
            for (k, v) in patch {
                match v { Some(v) => { model.insert(k, v); } None => { model.remove(&k); } }
            }
            match m.merged(&p) {
                Ok(out) => prop_assert_eq!(out.as_map(), &model),
                Err(MetadataError::TooManyPairs(n)) => { prop_assert_eq!(n, model.len()); prop_assert!(n > MAX_PAIRS) }
                Err(e) => prop_assert!(false, "unexpected {e}"),
            }
        }

        #[test]
        fn removing_every_key_empties_the_map(base in btree_map("[a-z]{1,8}", "[a-z]{0,8}", 0..16)) {
            let m = Metadata::parse(base.clone()).unwrap();
            let p = MetadataPatch::parse(base.keys().map(|k| (k.clone(), None)).collect()).unwrap();
            prop_assert!(m.merged(&p).unwrap().as_map().is_empty());
        }

        #[test]
        fn parse_accepts_exactly_the_maps_within_limits(base in btree_map(".{0,70}", ".{0,600}", 0..20)) {
            let ok = base.len() <= MAX_PAIRS && base.iter().all(|(k, v)| {
                let kc = k.chars().count();
                (1..=MAX_KEY_CHARS).contains(&kc) && v.chars().count() <= MAX_VALUE_CHARS && !k.contains('\0') && !v.contains('\0')
            });
            prop_assert_eq!(Metadata::parse(base).is_ok(), ok);
        }
    }
}
