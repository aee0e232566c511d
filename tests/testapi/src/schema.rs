// TEMPORARY interface stub, replaced by the real module.
#![allow(dead_code, unused_variables)]
use serde_json::Value;
#[derive(Clone, Debug, PartialEq)]
pub struct FieldError {
    pub field: String,
    pub reason: &'static str,
    pub message: String,
}
impl FieldError {
    pub fn to_string_with_field(&self) -> String {
        format!("{}: {}", self.field, self.message)
    }
}
pub fn prune(schema: &Value, obj: &mut Value) -> Vec<String> {
    todo!()
}
pub fn apply_defaults(schema: &Value, obj: &mut Value) {
    todo!()
}
pub fn validate(schema: &Value, obj: &Value, old: Option<&Value>) -> Vec<FieldError> {
    todo!()
}
pub fn check_structural(schema: &Value) -> Vec<String> {
    todo!()
}
