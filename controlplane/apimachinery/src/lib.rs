pub mod fields;
pub mod labels;
pub mod names;
pub mod strategic;
pub mod tables;
