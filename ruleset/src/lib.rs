//! fluxgate rule model, ruleset format and reference classifier (being written).
