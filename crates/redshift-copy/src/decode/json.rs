//! JSON 'auto': a stream of objects whose keys name the columns.

use serde_json::{Map, Value};

use super::{empty_rule, Fail, Row};
use crate::table::TargetColumn;
use crate::{CopyCommand, CopyError};

pub(crate) fn decode(
    cmd: &CopyCommand,
    text: &str,
    columns: &[TargetColumn],
    fail: &Fail,
) -> Result<Vec<Row>, CopyError> {
    let mut rows = Vec::new();
    let mut stream = serde_json::Deserializer::from_str(text).into_iter::<Value>();
    while let Some(item) = stream.next() {
        let line = line_at(text, stream.byte_offset());
        let value = item.map_err(|e| {
            fail(
                Some(line),
                &format!("Invalid JSON: input data is malformed JSON ({e})"),
            )
        })?;
        let Value::Object(object) = value else {
            return Err(fail(
                Some(line),
                "Invalid JSONPath format: Member is not an object.",
            ));
        };
        rows.push(
            columns
                .iter()
                .map(|c| {
                    lookup(&object, &c.name, cmd.json_ignore_case).and_then(|v| text_of(cmd, c, v))
                })
                .collect(),
        );
    }
    Ok(rows)
}

/// 'auto' matches keys to column names exactly; 'auto ignorecase' ignores case.
fn lookup<'a>(
    object: &'a Map<String, Value>,
    column: &str,
    ignore_case: bool,
) -> Option<&'a Value> {
    if ignore_case {
        object
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(column))
            .map(|(_, v)| v)
    } else {
        object.get(column)
    }
}

fn text_of(cmd: &CopyCommand, column: &TargetColumn, value: &Value) -> Option<String> {
    match value {
        Value::Null => None,
        Value::String(s) => empty_rule(cmd, column, s.clone()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) => Some(n.to_string()),
        // Nested values load as their JSON text (Redshift would need SUPER).
        other => Some(other.to_string()),
    }
}

fn line_at(text: &str, offset: usize) -> u64 {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|b| **b == b'\n')
        .count() as u64
        + 1
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::testing::{cmd, fail, s};

    fn cols() -> Vec<TargetColumn> {
        vec![
            TargetColumn::new("id", "integer"),
            TargetColumn::new("name", "text"),
            TargetColumn::new("tags", "text"),
        ]
    }

    fn rows(json_arg: &str, text: &str) -> Result<Vec<Row>, String> {
        decode(&cmd(&format!("JSON '{json_arg}'")), text, &cols(), &fail).map_err(|e| e.to_string())
    }

    #[test]
    fn lines_and_concatenated_objects() {
        let got = rows(
            "auto",
            "{\"id\":1,\"name\":\"a\",\"tags\":[1,2]}\n{\"id\":2}{\"id\":3,\"name\":null,\"x\":true}",
        )
        .unwrap();
        assert_eq!(
            got,
            vec![
                vec![s("1"), s("a"), s("[1,2]")],
                vec![s("2"), None, None],
                vec![s("3"), None, None]
            ]
        );
    }

    #[test]
    fn key_case_matters_unless_ignorecase() {
        assert_eq!(rows("auto", "{\"ID\":1}").unwrap()[0][0], None);
        assert_eq!(rows("auto ignorecase", "{\"ID\":1}").unwrap()[0][0], s("1"));
    }

    #[test]
    fn rejects_non_objects_and_malformed_json() {
        assert_eq!(
            rows("auto", "{\"id\":1}\n[1]").unwrap_err(),
            "line Some(2): Invalid JSONPath format: Member is not an object."
        );
        assert!(rows("auto", "{\"id\":")
            .unwrap_err()
            .contains("malformed JSON"));
    }
}
