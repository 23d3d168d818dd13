//! Schemas of the checked text fields, for request bodies' OpenAPI entries: a field that
//! is parsed as [`crate::HumanText`] names one of these with `#[schema(value_type = …)]`,
//! so its document says exactly what the parser accepts (length in characters, the
//! characters refused, a name's non-blank rule), and an outside fuzzer that follows the
//! document is never refused with a 400.

use crate::text::{HUMAN_TEXT_PATTERN, NAME_PATTERN};

macro_rules! text_schema {
    ($name:ident, $min:expr, $max:expr, $pattern:expr, $description:literal) => {
        #[doc = $description]
        pub struct $name;

        impl utoipa::PartialSchema for $name {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                utoipa::openapi::ObjectBuilder::new()
                    .schema_type(utoipa::openapi::schema::Type::String)
                    .min_length(Some($min))
                    .max_length(Some($max))
                    .pattern(Some($pattern))
                    .description(Some($description))
                    .into()
            }
        }

        impl utoipa::ToSchema for $name {}
    };
}

text_schema!(Name100, 1, 100, NAME_PATTERN, "A name: 1 to 100 characters, not all white space, no control characters.");
text_schema!(Name200, 1, 200, NAME_PATTERN, "A name: 1 to 200 characters, not all white space, no control characters.");
text_schema!(Text500, 0, 500, HUMAN_TEXT_PATTERN, "Free text: at most 500 characters, no control characters.");
text_schema!(Text1000, 0, 1000, HUMAN_TEXT_PATTERN, "Free text: at most 1000 characters, no control characters.");
text_schema!(Text255, 1, 255, HUMAN_TEXT_PATTERN, "1 to 255 characters, no control characters.");
