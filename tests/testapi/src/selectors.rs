// TEMPORARY interface stub, replaced by the real module.
#![allow(dead_code, unused_variables)]
pub struct LabelSelector;
impl LabelSelector {
    pub fn parse(s: &str) -> Result<Self, String> {
        todo!()
    }
    pub fn matches(&self, labels: &serde_json::Map<String, serde_json::Value>) -> bool {
        todo!()
    }
    pub fn is_empty(&self) -> bool {
        todo!()
    }
}
pub struct FieldSelector;
impl FieldSelector {
    pub fn parse(s: &str) -> Result<Self, String> {
        todo!()
    }
    pub fn matches(&self, obj: &serde_json::Value) -> bool {
        todo!()
    }
    pub fn is_empty(&self) -> bool {
        todo!()
    }
}
