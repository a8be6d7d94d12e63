//! With the `schemars` feature, `#[service]` servers report JSON Schemas of their parameter,
//! result and error types in `$describe`. Run with
//! `cargo test -p warren-rpc --features schemars --test schemas` (CI runs it too).
#![cfg(feature = "schemars")]

use serde::{Deserialize, Serialize};
use warren_rpc::introspect::ServiceDescription;
use warren_rpc::Service;

/// A point.
#[derive(Debug, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Point {
    /// Across.
    pub x: i32,
    /// Down.
    pub y: i32,
}

/// Why a shift failed.
#[derive(Debug, Serialize, Deserialize, schemars::JsonSchema)]
pub enum GeoError {
    /// Out of the map.
    OutOfBounds,
}

/// Geometry.
#[warren_rpc::service(name = "geo")]
pub trait Geo {
    /// Moves a point.
    async fn shift(&self, p: Point, by: i32) -> Result<Point, GeoError>;
    /// Does nothing.
    #[warren(oneway)]
    async fn nothing(&self);
}

struct Map;

impl Geo for Map {
    async fn shift(&self, p: Point, by: i32) -> Result<Point, GeoError> {
        Ok(Point {
            x: p.x.checked_add(by).ok_or(GeoError::OutOfBounds)?,
            y: p.y,
        })
    }
    async fn nothing(&self) {}
}

#[test]
fn describe_carries_json_schemas_of_every_type() {
    let server = GeoServer::new(Map);
    let description = ServiceDescription::of(&server, "geo");
    let schemas = description.schemas.expect("schemas with the feature");
    let shift = &schemas["shift"];
    assert_eq!(shift["params"]["by"]["type"], "integer", "{shift}");
    assert_eq!(
        shift["params"]["p"]["properties"]["x"]["type"], "integer",
        "{shift}"
    );
    assert_eq!(shift["result"]["title"], "Point", "{shift}");
    assert_eq!(shift["error"]["title"], "GeoError", "{shift}");
    let nothing = &schemas["nothing"];
    assert_eq!(nothing["params"], serde_json::json!({}), "{nothing}");
    assert_eq!(nothing["result"]["type"], "null", "{nothing}");
    assert!(nothing.get("error").is_none(), "{nothing}");
    assert_eq!(server.methods()[0].params[0].ty, "Point");
}
