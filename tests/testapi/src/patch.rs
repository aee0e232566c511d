// TEMPORARY interface stub, replaced by the real module.
#![allow(dead_code, unused_variables)]
use serde_json::Value;
#[derive(Clone, Debug, PartialEq)]
pub enum ListType {
    Atomic,
    Set,
    Map(Vec<String>),
}
pub trait SchemaInfo {
    fn list_type(&self, path: &[&str]) -> ListType;
}
pub struct CrdSchema<'a>(pub &'a Value);
impl SchemaInfo for CrdSchema<'_> {
    fn list_type(&self, path: &[&str]) -> ListType {
        todo!()
    }
}
pub struct Builtin;
impl SchemaInfo for Builtin {
    fn list_type(&self, path: &[&str]) -> ListType {
        todo!()
    }
}
#[derive(Debug, PartialEq)]
pub enum PatchError {
    Invalid(String),
    TestFailed(String),
    BadRequest(String),
}
pub fn json_patch(doc: &mut Value, patch: &Value) -> Result<(), PatchError> {
    todo!()
}
pub fn merge_patch(doc: &mut Value, patch: &Value) {
    todo!()
}
pub fn strategic_merge_patch(
    doc: &mut Value,
    patch: &Value,
    schema: &dyn SchemaInfo,
) -> Result<(), PatchError> {
    todo!()
}
#[derive(Debug, PartialEq)]
pub struct Conflict {
    pub manager: String,
    pub field: String,
}
pub struct ApplyRequest<'a> {
    pub current: Option<&'a Value>,
    pub applied: &'a Value,
    pub manager: &'a str,
    pub force: bool,
    pub subresource: Option<&'a str>,
    pub api_version: &'a str,
    pub now: &'a str,
    pub schema: &'a dyn SchemaInfo,
}
pub fn apply(req: ApplyRequest) -> Result<Value, Vec<Conflict>> {
    todo!()
}
pub fn record_update(
    old: Option<&Value>,
    new: &mut Value,
    manager: &str,
    subresource: Option<&str>,
    api_version: &str,
    now: &str,
    schema: &dyn SchemaInfo,
) {
    todo!()
}
