// TEMPORARY interface stub, replaced by the real module.
#![allow(dead_code, unused_variables)]
#[derive(Clone, Debug, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Column {
    pub name: String,
    #[serde(rename = "type")]
    pub type_: String,
    #[serde(default)]
    pub format: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub priority: i32,
    pub json_path: String,
}
pub fn jsonpath(obj: &serde_json::Value, path: &str) -> Vec<serde_json::Value> {
    todo!()
}
pub enum IncludeObject {
    None,
    Metadata,
    Object,
}
pub fn table(
    objects: &[serde_json::Value],
    columns: &[Column],
    include: IncludeObject,
    resource_version: &str,
    now: chrono::DateTime<chrono::Utc>,
) -> serde_json::Value {
    todo!()
}
pub fn builtin_columns(kind: &str) -> Vec<Column> {
    todo!()
}
pub fn human_duration(d: chrono::Duration) -> String {
    todo!()
}
