//! The syntax of bank identifiers that more than one service reads (pure). Whether an
//! identifier exists is for the rail or the gateway to say.

/// A virtual payment address (UPI): the common `name@handle` form PSPs issue. NPCI
/// publishes no grammar (providers.md §3.1); a collect or payout to an unknown VPA fails
/// at the provider.
pub fn is_vpa(vpa: &str) -> bool {
    let Some((name, handle)) = vpa.split_once('@') else { return false };
    (2..=256).contains(&name.len())
        && name.bytes().all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'-' | b'_'))
        && (2..=64).contains(&handle.len())
        && handle.bytes().all(|byte| byte.is_ascii_alphabetic())
}

/// An Indian Financial System Code: four letters (the bank), a `0`, six letters or digits
/// (the branch): `^[A-Z]{4}0[A-Z0-9]{6}$` (RBI; providers.md §3.1).
pub fn is_ifsc(ifsc: &str) -> bool {
    let bytes = ifsc.as_bytes();
    bytes.len() == 11
        && bytes[..4].iter().all(u8::is_ascii_uppercase)
        && bytes[4] == b'0'
        && bytes[5..].iter().all(|byte| byte.is_ascii_uppercase() || byte.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vpas() {
        for good in ["success@razorpay", "ab@ok", "shop.owner-1_x@okhdfcbank"] {
            assert!(is_vpa(good), "{good}");
        }
        for bad in ["", "@razorpay", "a@razorpay", "name@", "name@h", "na me@bank", "name@bank1", "a@b@c", "ü@bank"] {
            assert!(!is_vpa(bad), "{bad}");
        }
    }

    #[test]
    fn ifscs() {
        for good in ["HDFC0000001", "SBIN0005943", "ICIC0ABC123"] {
            assert!(is_ifsc(good), "{good}");
        }
        for bad in ["", "HDFC000001", "HDFC1000001", "hdfc0000001", "HDF00000001", "HDFC0000001 ", "HDFC00000É1"] {
            assert!(!is_ifsc(bad), "{bad}");
        }
    }
}
