//! Base64 as the QEMU guest agent sends it (`guest-exec-status` output).

/// Standard base64 (what the guest agent sends); stops at the first byte outside it.
pub(super) fn decode(s: &str) -> Vec<u8> {
    let val = |c: u8| match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    };
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in s.bytes() {
        let Some(v) = val(c) else { break };
        acc = (acc << 6) | v as u32;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    out
}

#[cfg(test)]
mod base64_tests {
    #[test]
    fn decodes_what_the_agent_sends() {
        assert_eq!(super::decode("aGVsbG8gd29ybGQ="), b"hello world");
        assert_eq!(super::decode("YQ=="), b"a");
        assert_eq!(super::decode(""), b"");
    }
}
