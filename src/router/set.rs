//! TEMPORARY STUB (lead) — helper replaces this file with the real SET parser.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetItem {
    pub key: String,
    pub text: String,
}
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SetEffect {
    Session(Vec<SetItem>),
    NotSession,
    Unreplayable,
}
pub fn parse_set(_sql: &[u8]) -> SetEffect {
    SetEffect::Unreplayable
}
