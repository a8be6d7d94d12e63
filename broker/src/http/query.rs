//! The list endpoints' query parameters, as RabbitMQ's management API reads them: `name` and
//! `use_regex` filter (paged requests only, as RabbitMQ), `sort` (a dotted path such as `message_stats.publish`) and
//! `sort_reverse` order, `page`/`page_size` page (answered with RabbitMQ's envelope), and
//! `columns` keeps only the listed (dotted) fields.

use super::error::{ApiError, ApiResult};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Map, Value};
use std::collections::HashMap;

/// RabbitMQ's largest page size.
const MAX_PAGE_SIZE: u64 = 500;

/// The query parameters of a list request.
#[derive(Debug, Default, serde::Deserialize)]
pub(crate) struct ListQuery {
    columns: Option<String>,
    sort: Option<String>,
    sort_reverse: Option<String>,
    page: Option<String>,
    page_size: Option<String>,
    name: Option<String>,
    use_regex: Option<String>,
}

fn lookup<'a>(v: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(v, |v, k| v.get(k))
}

fn cmp(a: Option<&Value>, b: Option<&Value>) -> std::cmp::Ordering {
    use std::cmp::Ordering;
    match (a, b) {
        (Some(Value::Number(x)), Some(Value::Number(y))) => x
            .as_f64()
            .partial_cmp(&y.as_f64())
            .unwrap_or(Ordering::Equal),
        (Some(Value::String(x)), Some(Value::String(y))) => x.cmp(y),
        (Some(Value::Bool(x)), Some(Value::Bool(y))) => x.cmp(y),
        (None, Some(_)) => Ordering::Less,
        (Some(_), None) => Ordering::Greater,
        _ => Ordering::Equal,
    }
}

/// Keeps only the given dotted columns of an object.
fn project(v: &Value, columns: &[&str]) -> Value {
    let mut out = Map::new();
    for c in columns {
        let Some(x) = lookup(v, c) else { continue };
        let mut parts = c.split('.').peekable();
        let mut at = &mut out;
        while let Some(p) = parts.next() {
            if parts.peek().is_none() {
                at.insert(p.to_string(), x.clone());
            } else {
                let e = at
                    .entry(p.to_string())
                    .or_insert_with(|| Value::Object(Map::new()));
                if !e.is_object() {
                    *e = Value::Object(Map::new());
                }
                at = e.as_object_mut().expect("object");
            }
        }
    }
    Value::Object(out)
}

fn positive(raw: &Option<String>, what: &str, default: u64) -> ApiResult<u64> {
    match raw {
        None => Ok(default),
        Some(s) => match s.parse::<u64>() {
            Ok(n) if n > 0 => Ok(n),
            _ => Err(ApiError::bad_request(format!(
                "{what} must be a positive integer"
            ))),
        },
    }
}

impl ListQuery {
    /// Filters, sorts, pages and projects `items` (every item a JSON object), answering with
    /// the plain list or, when `page` was given, RabbitMQ's paged envelope.
    pub(crate) fn respond(&self, mut items: Vec<Value>) -> ApiResult<Response> {
        let total = items.len();
        let paged = self.page.is_some();
        // As RabbitMQ: the name filter applies to paged requests only.
        if let Some(name) = self.name.as_deref().filter(|n| !n.is_empty() && paged) {
            let name_of = |v: &Value| {
                v.get("name")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string()
            };
            if self.use_regex.as_deref() == Some("true") {
                let re = regex::Regex::new(name)
                    .map_err(|e| ApiError::bad_request(format!("invalid regex: {e}")))?;
                items.retain(|v| re.is_match(&name_of(v)));
            } else {
                items.retain(|v| name_of(v).contains(name));
            }
        }
        // RabbitMQ sorts by vhost then name when no sort is given.
        let keys: Vec<String> = match self.sort.as_deref().filter(|s| !s.is_empty()) {
            Some(s) => s.split(',').map(str::to_string).collect(),
            None => vec!["vhost".into(), "name".into()],
        };
        items.sort_by(|a, b| {
            keys.iter()
                .map(|k| cmp(lookup(a, k), lookup(b, k)))
                .find(|o| o.is_ne())
                .unwrap_or(std::cmp::Ordering::Equal)
        });
        if self.sort_reverse.as_deref() == Some("true") {
            items.reverse();
        }
        let filtered = items.len();
        let page = positive(&self.page, "page", 1)?;
        let page_size = positive(&self.page_size, "page_size", 100)?;
        if page_size > MAX_PAGE_SIZE {
            return Err(ApiError::bad_request(format!(
                "page_size: max page size is {MAX_PAGE_SIZE}"
            )));
        }
        let page_count = (filtered as u64).div_ceil(page_size);
        if paged {
            if page > page_count.max(1) {
                return Err(ApiError::bad_request(format!(
                    "page: page out of range: {page} of {page_count}"
                )));
            }
            let start = ((page - 1) * page_size) as usize;
            items = items
                .into_iter()
                .skip(start)
                .take(page_size as usize)
                .collect();
        }
        if let Some(cols) = self.columns.as_deref().filter(|c| !c.is_empty()) {
            let cols: Vec<&str> = cols.split(',').collect();
            items = items.iter().map(|v| project(v, &cols)).collect();
        }
        if !paged {
            return Ok(Json(Value::Array(items)).into_response());
        }
        Ok(Json(json!({
            "filtered_count": filtered,
            "item_count": items.len(),
            "items": items,
            "page": page,
            "page_count": page_count,
            "page_size": page_size,
            "total_count": total,
        }))
        .into_response())
    }

    /// Projects a single object with `columns`, when given.
    pub(crate) fn one(&self, v: Value) -> Response {
        match self.columns.as_deref().filter(|c| !c.is_empty()) {
            Some(cols) => Json(project(&v, &cols.split(',').collect::<Vec<_>>())).into_response(),
            None => Json(v).into_response(),
        }
    }
}

/// The raw query string as a map (for parameters a handler reads itself).
pub(crate) type RawQuery = HashMap<String, String>;
