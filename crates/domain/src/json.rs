//! Opaque client JSON: `tool_resources` (an object) and `attachments` (an
//! array). Weft attaches no meaning to them but still guards what it stores:
//! nesting at most 32 levels (so no adapter or serializer recurses without
//! bound) and no U+0000 in any string or key (PostgreSQL `jsonb` cannot hold it).

use serde::Serialize;
use serde_json::Value;

/// Deepest nesting allowed; the field's own value is level 1.
pub const MAX_DEPTH: usize = 32;

/// Opaque JSON broke its shape rules.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JsonError {
    /// Wrong top-level type.
    #[error("{field} must be {expected}")]
    Shape {
        /// Which field.
        field: &'static str,
        /// `an object` or `an array`.
        expected: &'static str,
    },
    /// Nested deeper than [`MAX_DEPTH`].
    #[error("{field} is nested deeper than {MAX_DEPTH} levels")]
    TooDeep {
        /// Which field.
        field: &'static str,
    },
    /// A string or key holds U+0000.
    #[error("{field} must not contain the NUL character (U+0000)")]
    Nul {
        /// Which field.
        field: &'static str,
    },
}

/// Checks depth and NUL without recursion, so a hostile document cannot
/// overflow the stack here.
fn check(field: &'static str, v: &Value) -> Result<(), JsonError> {
    let mut stack: Vec<(&Value, usize)> = vec![(v, 1)];
    while let Some((v, depth)) = stack.pop() {
        if depth > MAX_DEPTH {
            return Err(JsonError::TooDeep { field });
        }
        match v {
            Value::String(s) if s.contains('\0') => return Err(JsonError::Nul { field }),
            Value::Array(items) => stack.extend(items.iter().map(|i| (i, depth + 1))),
            Value::Object(map) => {
                for (k, i) in map {
                    if k.contains('\0') {
                        return Err(JsonError::Nul { field });
                    }
                    stack.push((i, depth + 1));
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// A thread's `tool_resources`: any JSON object within the depth and NUL rules.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(transparent)]
pub struct ToolResources(Value);

impl Default for ToolResources {
    fn default() -> Self {
        Self(Value::Object(serde_json::Map::new()))
    }
}

impl ToolResources {
    /// Validates a client value.
    ///
    /// # Errors
    /// [`JsonError`] when not an object, too deep, or holding U+0000.
    pub fn parse(v: Value) -> Result<Self, JsonError> {
        if !v.is_object() {
            return Err(JsonError::Shape {
                field: "tool_resources",
                expected: "an object",
            });
        }
        check("tool_resources", &v)?;
        Ok(Self(v))
    }

    /// The stored value.
    pub fn as_value(&self) -> &Value {
        &self.0
    }
}

/// A message's `attachments`: any JSON array within the depth and NUL rules.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(transparent)]
pub struct Attachments(Value);

impl Default for Attachments {
    fn default() -> Self {
        Self(Value::Array(Vec::new()))
    }
}

impl Attachments {
    /// Validates a client value.
    ///
    /// # Errors
    /// [`JsonError`] when not an array, too deep, or holding U+0000.
    pub fn parse(v: Value) -> Result<Self, JsonError> {
        if !v.is_array() {
            return Err(JsonError::Shape {
                field: "attachments",
                expected: "an array",
            });
        }
        check("attachments", &v)?;
        Ok(Self(v))
    }

    /// The stored value.
    pub fn as_value(&self) -> &Value {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn nested_object(levels: usize) -> Value {
        let mut v = json!({});
        for _ in 1..levels {
            v = json!({ "a": v });
        }
        v
    }

    #[test]
    fn depth_32_is_accepted_and_33_refused() {
        assert!(ToolResources::parse(nested_object(32)).is_ok());
        assert_eq!(
            ToolResources::parse(nested_object(33)),
            Err(JsonError::TooDeep {
                field: "tool_resources"
            })
        );
    }

    #[test]
    fn array_nesting_counts_too() {
        let mut v = json!([]);
        for _ in 1..33 {
            v = json!([v]);
        }
        assert!(Attachments::parse(v).is_err());
    }

    #[test]
    fn wrong_shapes_and_nul_are_refused() {
        assert!(ToolResources::parse(json!([])).is_err());
        assert!(Attachments::parse(json!({})).is_err());
        assert!(ToolResources::parse(json!({"a": "x\u{0}"})).is_err());
        assert!(ToolResources::parse(json!({"a\u{0}": 1})).is_err());
        assert!(
            Attachments::parse(json!([{"file_id": "f", "tools": [{"type": "file_search"}]}]))
                .is_ok()
        );
    }

    proptest! {
        #[test]
        fn depth_rule_matches_the_level_count(levels in 1usize..60) {
            prop_assert_eq!(ToolResources::parse(nested_object(levels)).is_ok(), levels <= MAX_DEPTH);
        }
    }
}
