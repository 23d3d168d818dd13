//! Numbered parameters for statements assembled from parts.
//!
//! A statement part that another service may splice into its own statement (the outbox
//! append, stored responses) cannot hard-code `$1`: it numbers its parameters from where
//! the host statement's end.

/// `$first::t0, $first+1::t1, …`: one cast parameter per type, numbered from `first`.
pub fn numbered(first: usize, types: &[&str]) -> String {
    types
        .iter()
        .enumerate()
        .map(|(offset, type_name)| format!("${}::{type_name}", first + offset))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::numbered;

    #[test]
    fn parameters_are_numbered_from_first() {
        assert_eq!(numbered(34, &["uuid[]", "text[]", "int4[]"]), "$34::uuid[], $35::text[], $36::int4[]");
        assert_eq!(numbered(1, &[]), "");
    }
}
