//! UK modulus checking: whether a sort code and an account number *can* belong together,
//! by Vocalink's published algorithm ("Validating account numbers", v8.50) over its weight
//! table (`data/vocalink/valacdos-v8-50.txt`) and sort-code substitutions
//! (`scsubtab.txt`). Pure: no I/O, the tables are embedded at compile time.
//!
//! A pass does not prove the account exists (Confirmation of Payee asks the bank); a fail
//! proves the pair is mistyped, so Till refuses it before anything is stored or sent. A
//! sort code that no row of the table covers cannot be checked, and Vocalink's rule is
//! to treat it as valid ([`Outcome::NotCheckable`]).
//!
//! The 14 digits are named `u v w x y z` (the sort code) and `a b c d e f g h` (the
//! account number), as in the spec. Each table row gives a method (`MOD10`, `MOD11`,
//! `DBLAL`), 14 weights and perhaps an exception (1 to 14) that changes the weights, the
//! digits or the verdict. A sort code has one row or two; with two, both checks must
//! pass unless an exception says otherwise.

use std::sync::LazyLock;

/// The weight table in use: v8.50, valid from 23 June 2025 (the fixture README).
const VALACDOS: &str = include_str!("../data/vocalink/valacdos-v8-50.txt");
const SCSUBTAB: &str = include_str!("../data/vocalink/scsubtab.txt");

/// The verdict on a sort code and account number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Valid,
    Invalid,
    /// No row of the table covers the sort code, or exception 6 (a foreign-currency
    /// account) says it cannot be checked: Vocalink treats it as valid.
    NotCheckable,
}

impl Outcome {
    pub fn passes(self) -> bool {
        !matches!(self, Outcome::Invalid)
    }
}

/// A sort code that is not 6 digits or an account number that is not 8.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Malformed {
    #[error("a sort code is 6 digits")]
    SortCode,
    #[error("an account number is 8 digits")]
    AccountNumber,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Method {
    Mod10,
    Mod11,
    DoubleAlternate,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Rule {
    start: u32,
    end: u32,
    method: Method,
    weights: [i32; 14],
    exception: Option<u8>,
}

/// The weight table (rows in file order, which is by sort code) and the substitutions.
#[derive(Debug)]
pub struct Table {
    rules: Vec<Rule>,
    substitutions: Vec<(u32, u32)>,
}

static TABLE: LazyLock<Table> = LazyLock::new(|| {
    // The embedded files are fixed at compile time and `tables_parse` proves they parse.
    Table::parse(VALACDOS, SCSUBTAB).expect("the embedded Vocalink tables parse")
});

/// Checks `sort_code` (6 digits) and `account_number` (8 digits) against the embedded
/// table.
pub fn check(sort_code: &str, account_number: &str) -> Result<Outcome, Malformed> {
    TABLE.check(sort_code, account_number)
}

fn digits<const N: usize>(text: &str) -> Option<[u32; N]> {
    let bytes = text.as_bytes();
    if bytes.len() != N || !bytes.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let mut out = [0; N];
    for (slot, byte) in out.iter_mut().zip(bytes) {
        *slot = u32::from(byte - b'0');
    }
    Some(out)
}

fn number(digits: &[u32]) -> u32 {
    digits.iter().fold(0, |total, digit| total * 10 + digit)
}

// Positions in the 14 digits.
const A: usize = 6;
const B: usize = 7;
const C: usize = 8;
const G: usize = 12;
const H: usize = 13;

impl Table {
    /// Parses the weight table (`valacdos.txt`) and the substitutions (`scsubtab.txt`).
    pub fn parse(valacdos: &str, scsubtab: &str) -> Result<Table, String> {
        let mut rules = Vec::new();
        for (index, line) in valacdos.lines().enumerate().filter(|(_, line)| !line.trim().is_empty()) {
            let bad = |why: &str| format!("valacdos line {}: {why}: {line:?}", index + 1);
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.len() != 17 && fields.len() != 18 {
                return Err(bad("not 17 or 18 fields"));
            }
            let code = |text: &str| digits::<6>(text).map(|code| number(&code)).ok_or_else(|| bad("a sort code"));
            let (start, end) = (code(fields[0])?, code(fields[1])?);
            let method = match fields[2] {
                "MOD10" => Method::Mod10,
                "MOD11" => Method::Mod11,
                "DBLAL" => Method::DoubleAlternate,
                _ => return Err(bad("an unknown method")),
            };
            let mut weights = [0; 14];
            for (slot, text) in weights.iter_mut().zip(&fields[3..17]) {
                // Weights are small integers: -1 to 128 in v8.50 (a few rows weigh a digit
                // -1, one weighs them as powers of two).
                *slot = text.parse::<i32>().ok().filter(|weight| weight.abs() <= 999).ok_or_else(|| bad("a weight"))?;
            }
            let exception = match fields.get(17) {
                None => None,
                Some(text) => Some(
                    text.parse::<u8>()
                        .ok()
                        .filter(|code| (1..=14).contains(code))
                        .ok_or_else(|| bad("an exception from 1 to 14"))?,
                ),
            };
            if start > end || rules.last().is_some_and(|last: &Rule| last.start > start) {
                return Err(bad("ranges out of order"));
            }
            rules.push(Rule { start, end, method, weights, exception });
        }
        let mut substitutions = Vec::new();
        for (index, line) in scsubtab.lines().enumerate().filter(|(_, line)| !line.trim().is_empty()) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let code = |text: &&str| digits::<6>(text).map(|code| number(&code));
            match (fields.first().and_then(code), fields.get(1).and_then(code), fields.len()) {
                (Some(from), Some(to), 2) => substitutions.push((from, to)),
                _ => return Err(format!("scsubtab line {}: {line:?}", index + 1)),
            }
        }
        Ok(Table { rules, substitutions })
    }

    /// The rows that cover `sort_code`, in table order (none, one or two).
    fn rules_for(&self, sort_code: u32) -> Vec<&Rule> {
        // Rows are ordered by start; the covering rows are consecutive among those that
        // start at or before the code.
        let before = self.rules.partition_point(|rule| rule.start <= sort_code);
        let mut found: Vec<&Rule> =
            self.rules[..before].iter().rev().take(4).filter(|rule| rule.end >= sort_code).collect();
        found.reverse();
        found
    }

    pub fn check(&self, sort_code: &str, account_number: &str) -> Result<Outcome, Malformed> {
        let sort = digits::<6>(sort_code).ok_or(Malformed::SortCode)?;
        let account = digits::<8>(account_number).ok_or(Malformed::AccountNumber)?;
        let rules = self.rules_for(number(&sort));
        let Some(first) = rules.first() else { return Ok(Outcome::NotCheckable) };
        let second = rules.get(1);
        let all = join(sort, account);
        let verdict = |valid: bool| if valid { Outcome::Valid } else { Outcome::Invalid };

        // Exception 6: a foreign-currency account (a in 4..=8 and g = h) cannot be checked.
        if rules.iter().any(|rule| rule.exception == Some(6)) && (4..=8).contains(&all[A]) && all[G] == all[H] {
            return Ok(Outcome::NotCheckable);
        }
        match first.exception {
            Some(5) => {
                // Both checks with their own check digits, on the substituted sort code.
                let substituted = self
                    .substitutions
                    .iter()
                    .find(|(from, _)| *from == number(&sort))
                    .map_or(sort, |(_, to)| split_code(*to));
                let digits = join(substituted, account);
                let first_ok = exception_5(first, &digits);
                let second_ok = second.is_none_or(|rule| exception_5(rule, &digits));
                Ok(verdict(first_ok && second_ok))
            }
            Some(2) => {
                // Exceptions 2 and 9: exception 2's weights; failing that, Lloyds' sort
                // code 309634 with the second row's weights.
                if standard(first, &all) {
                    return Ok(Outcome::Valid);
                }
                Ok(verdict(second.is_some_and(|rule| standard(rule, &join(split_code(309_634), account)))))
            }
            Some(10 | 12) => {
                // Exceptions 10 and 11, 12 and 13: valid when either check passes.
                Ok(verdict(standard(first, &all) || second.is_some_and(|rule| standard(rule, &all))))
            }
            Some(14) => {
                if standard(first, &all) {
                    return Ok(Outcome::Valid);
                }
                // A non-standard account number with a trailing 0, 1 or 9: drop it,
                // shift right with a leading 0, and check again.
                if ![0, 1, 9].contains(&all[H]) {
                    return Ok(Outcome::Invalid);
                }
                let mut shifted = [0; 8];
                shifted[1..].copy_from_slice(&account[..7]);
                Ok(verdict(standard(first, &join(sort, shifted))))
            }
            _ => {
                let first_ok = standard(first, &all);
                let second_ok = match second {
                    None => true,
                    // Exception 3: when c is 6 or 9 the second (double alternate) check is
                    // not carried out.
                    Some(rule) if rule.exception == Some(3) && (all[C] == 6 || all[C] == 9) => true,
                    Some(rule) => standard(rule, &all),
                };
                Ok(verdict(first_ok && second_ok))
            }
        }
    }
}

fn split_code(code: u32) -> [u32; 6] {
    let mut out = [0; 6];
    let mut rest = code;
    for slot in out.iter_mut().rev() {
        *slot = rest % 10;
        rest /= 10;
    }
    out
}

fn join(sort: [u32; 6], account: [u32; 8]) -> [u32; 14] {
    let mut all = [0; 14];
    all[..6].copy_from_slice(&sort);
    all[6..].copy_from_slice(&account);
    all
}

/// The weights of `rule` for these digits, with the exceptions that change weights.
fn weights(rule: &Rule, all: &[u32; 14]) -> [i32; 14] {
    let mut weights = rule.weights;
    match rule.exception {
        // Exception 2: substitute weights when a is not 0.
        Some(2) if all[A] != 0 => {
            weights = if all[G] == 9 {
                [0, 0, 0, 0, 0, 0, 0, 0, 8, 7, 10, 9, 3, 1]
            } else {
                [0, 0, 1, 2, 5, 3, 6, 4, 8, 7, 10, 9, 3, 1]
            };
        }
        // Exception 7: g = 9 zeroises u to b. Exception 10: so does ab = 09 or 99 with g = 9.
        Some(7) if all[G] == 9 => weights[..=B].fill(0),
        Some(10) if all[G] == 9 && matches!((all[A], all[B]), (0 | 9, 9)) => weights[..=B].fill(0),
        _ => {}
    }
    weights
}

/// The weighted total of a row: products summed, or for double alternate the digits of
/// each product summed.
fn total(rule: &Rule, all: &[u32; 14]) -> u32 {
    let weights = weights(rule, all);
    let sum: i32 = all
        .iter()
        .zip(weights)
        .map(|(digit, weight)| {
            // Digits are 0 to 9 and weights at most 999 either side: no overflow.
            let product = i32::try_from(*digit).unwrap_or(0) * weight;
            if rule.method == Method::DoubleAlternate {
                product / 10 + product % 10
            } else {
                product
            }
        })
        .sum();
    // A negative weight can make the total negative. Its non-negative remainder by 110
    // (10 × 11) has the same remainders by 10 and by 11, which is all a check reads.
    sum.rem_euclid(110).unsigned_abs()
}

/// A row's check, with the exceptions that change digits (8) or the verdict (1, 4).
fn standard(rule: &Rule, all: &[u32; 14]) -> bool {
    let mut all = *all;
    if rule.exception == Some(8) {
        all[..6].copy_from_slice(&split_code(90_126));
    }
    let mut sum = total(rule, &all);
    match rule.method {
        Method::Mod10 => sum.is_multiple_of(10),
        Method::Mod11 if rule.exception == Some(4) => sum % 11 == all[G] * 10 + all[H],
        Method::Mod11 => sum.is_multiple_of(11),
        Method::DoubleAlternate => {
            if rule.exception == Some(1) {
                sum += 27;
            }
            sum.is_multiple_of(10)
        }
    }
}

/// Exception 5's checks: modulus 11 with g as the check digit, double alternate with h.
fn exception_5(rule: &Rule, all: &[u32; 14]) -> bool {
    let sum = total(rule, all);
    match rule.method {
        Method::Mod11 => match sum % 11 {
            0 => all[G] == 0,
            1 => false,
            remainder => 11 - remainder == all[G],
        },
        Method::DoubleAlternate | Method::Mod10 => match sum % 10 {
            0 => all[H] == 0,
            remainder => 10 - remainder == all[H],
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_parse() {
        let table = Table::parse(VALACDOS, SCSUBTAB).expect("parse");
        assert_eq!(table.rules.len(), 1151);
        assert_eq!(table.substitutions.len(), 21);
    }

    /// Vocalink's test cases ("Validating account numbers" v8.50, chapter 3), in order.
    #[test]
    fn vocalink_test_vectors() {
        let cases: [(&str, &str, bool, &str); 34] = [
            ("089999", "66374958", true, "pass modulus 10"),
            ("107999", "88837491", true, "pass modulus 11"),
            ("202959", "63748472", true, "pass modulus 11 and double alternate"),
            ("871427", "46238510", true, "exceptions 10 and 11, first passes, second fails"),
            ("872427", "46238510", true, "exceptions 10 and 11, first fails, second passes"),
            ("871427", "09123496", true, "exception 10, ab = 09 and g = 9"),
            ("871427", "99123496", true, "exception 10, ab = 99 and g = 9"),
            ("820000", "73688637", true, "exception 3, c = 6: second check skipped"),
            ("827999", "73988638", true, "exception 3, c = 9: second check skipped"),
            ("827101", "28748352", true, "exception 3, both checks pass"),
            ("134020", "63849203", true, "exception 4, remainder equals the check digits"),
            ("118765", "64371389", true, "exception 1, 27 added"),
            ("200915", "41011166", true, "exception 6, foreign currency account"),
            ("938611", "07806039", true, "exception 5, first check passes"),
            ("938600", "42368003", true, "exception 5, check digit 2 remainder 0"),
            ("938063", "55065200", true, "exception 5, both checks with remainder 0"),
            ("772798", "99345694", true, "exception 7, g = 9"),
            ("086090", "06774744", true, "exception 8, sort code 090126"),
            ("309070", "02355688", true, "exceptions 2 and 9, first check passes"),
            ("309070", "12345668", true, "exceptions 2 and 9, second check passes with a != 0, g != 9"),
            ("309070", "12345677", true, "exceptions 2 and 9, a != 0 and g != 9"),
            ("309070", "99345694", true, "exceptions 2 and 9, a != 0 and g = 9"),
            ("938063", "15764273", false, "exception 5, first check digit right, second wrong"),
            ("938063", "15764264", false, "exception 5, first check digit wrong, second right"),
            ("938063", "15763217", false, "exception 5, first check remainder 1"),
            ("118765", "64371388", false, "exception 1, fails double alternate"),
            ("203099", "66831036", false, "passes modulus 11, fails double alternate"),
            ("203099", "58716970", false, "fails modulus 11, passes double alternate"),
            ("089999", "66374959", false, "fails modulus 10"),
            ("107999", "88837493", false, "fails modulus 11"),
            ("074456", "12345112", true, "exceptions 12 and 13, passes modulus 11"),
            ("070116", "34012583", true, "exceptions 12 and 13, passes modulus 11"),
            ("074456", "11104102", true, "exceptions 12 and 13, fails modulus 11, passes modulus 10"),
            ("180002", "00000190", true, "exception 14, first check fails, second passes"),
        ];
        for (number, (sort, account, valid, case)) in cases.iter().enumerate() {
            let outcome = check(sort, account).expect("well formed");
            assert_eq!(outcome.passes(), *valid, "case {}: {case}: {sort} {account} gave {outcome:?}", number + 1);
        }
    }

    #[test]
    fn a_sort_code_no_row_covers_cannot_be_checked() {
        assert_eq!(check("000000", "12345678"), Ok(Outcome::NotCheckable));
    }

    #[test]
    fn malformed_input_is_named() {
        assert_eq!(check("12345", "12345678"), Err(Malformed::SortCode));
        assert_eq!(check("1234567", "12345678"), Err(Malformed::SortCode));
        assert_eq!(check("12-34-56", "12345678"), Err(Malformed::SortCode));
        assert_eq!(check("089999", "6637495a"), Err(Malformed::AccountNumber));
        assert_eq!(check("089999", "663749581"), Err(Malformed::AccountNumber));
        assert_eq!(check("089999", "６６３７４９５８"), Err(Malformed::AccountNumber));
    }

    #[test]
    fn one_changed_digit_of_a_standard_pass_fails() {
        // Modulus 10 and 11 catch every single-digit substitution where the weight is not
        // a multiple of the modulus; spot-check the spec's first two cases.
        for (sort, account) in [("089999", "66374958"), ("107999", "88837491")] {
            for position in 0..8 {
                let mut changed: Vec<u8> = account.bytes().collect();
                changed[position] = b'0' + (changed[position] - b'0' + 1) % 10;
                let changed = String::from_utf8(changed).expect("ascii");
                assert_eq!(check(sort, &changed), Ok(Outcome::Invalid), "{sort} {changed}");
            }
        }
    }

    proptest::proptest! {
        #[test]
        fn never_panics(sort in "\\PC{0,8}", account in "\\PC{0,10}") {
            let _ = check(&sort, &account);
        }

        #[test]
        fn every_well_formed_pair_has_a_verdict(sort in "[0-9]{6}", account in "[0-9]{8}") {
            proptest::prop_assert!(check(&sort, &account).is_ok());
        }
    }
}
