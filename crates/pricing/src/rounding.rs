//! Rounding, named. Every division of money in Till goes through one of these, so a
//! reader can see which way each fraction of a penny went.

#![allow(clippy::arithmetic_side_effects)] // each operation is on bounded i128 inputs, explained at the call

/// `numerator / denominator` rounded half up (0.5 goes up): the rounding HMRC calls
/// "rounding up and down" (VATREC12030) and CGST Rule 46 practice to the paisa.
/// Inputs are non-negative and `denominator` positive; callers keep numerators below
/// 2^120, far under i128's range (amounts are i64, rates at most 10^8).
pub fn half_up(numerator: i128, denominator: i128) -> i128 {
    debug_assert!(numerator >= 0 && denominator > 0);
    // floor(n/d + 1/2) = floor((2n + d) / 2d), exact in integers.
    (2 * numerator + denominator) / (2 * denominator)
}

/// Splits `total` into parts proportional to `weights` that sum to `total` exactly: each
/// part is first rounded down, then the units left over go one each to the parts with the
/// largest remainders (the earliest part wins a tie). With `total` at most the sum of the
/// weights, no part exceeds its weight. All inputs non-negative.
pub fn allocate(total: i128, weights: &[i128]) -> Vec<i128> {
    let sum: i128 = weights.iter().sum();
    if sum == 0 {
        return vec![0; weights.len()];
    }
    let mut parts: Vec<i128> = Vec::with_capacity(weights.len());
    let mut remainders: Vec<(i128, usize)> = Vec::with_capacity(weights.len());
    for (index, weight) in weights.iter().enumerate() {
        let product = total * weight;
        parts.push(product / sum);
        remainders.push((product % sum, index));
    }
    let mut left: i128 = total - parts.iter().sum::<i128>();
    // Largest remainder first; equal remainders keep their order (stable sort).
    remainders.sort_by_key(|(remainder, _)| std::cmp::Reverse(*remainder));
    for (_, index) in remainders {
        if left == 0 {
            break;
        }
        parts[index] += 1;
        left -= 1;
    }
    parts
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn half_up_rounds_a_half_up_and_below_it_down() {
        assert_eq!(half_up(8676, 100), 87); // 86.76p → 87p (providers.md appendix)
        assert_eq!(half_up(250, 100), 3);
        assert_eq!(half_up(249, 100), 2);
        assert_eq!(half_up(1, 3), 0);
        assert_eq!(half_up(2, 3), 1);
        assert_eq!(half_up(0, 7), 0);
    }

    #[test]
    fn allocation_breaks_ties_by_position() {
        assert_eq!(allocate(10, &[1, 1, 1]), vec![4, 3, 3]);
        assert_eq!(allocate(0, &[5, 5]), vec![0, 0]);
        assert_eq!(allocate(7, &[0, 0]), vec![0, 0]);
        assert_eq!(allocate(100, &[100, 300]), vec![25, 75]);
    }

    proptest! {
        #[test]
        fn half_up_is_within_half_a_unit(numerator in 0_i128..1_000_000_000_000, denominator in 1_i128..1_000_000) {
            let rounded = half_up(numerator, denominator);
            // |rounded·d − n| ≤ d/2, and exactly d/2 only when it rounded up.
            let difference = rounded * denominator - numerator;
            prop_assert!(2 * difference <= denominator);
            prop_assert!(2 * difference > -denominator);
        }

        #[test]
        fn allocation_sums_exactly_and_never_exceeds_a_weight(
            weights in proptest::collection::vec(0_i128..1_000_000, 1..20),
            share in 0_u32..=100,
        ) {
            let sum: i128 = weights.iter().sum();
            let total = sum * i128::from(share) / 100;
            let parts = allocate(total, &weights);
            prop_assert_eq!(parts.iter().sum::<i128>(), if sum == 0 { 0 } else { total });
            for (part, weight) in parts.iter().zip(&weights) {
                prop_assert!(*part >= 0 && part <= weight);
            }
        }
    }
}
