//! Bootstrap tokens in kubeadm's format, `[a-z0-9]{6}.[a-z0-9]{16}`: the
//! public id and the secret. Generated here so that both the controller
//! and rpoolctl can make one (rpoolctl sends the token it made, so a
//! retried `token create` is answered with the same token, never a second).

/// Characters of a token id.
pub const ID_LEN: usize = 6;
/// Characters of a token secret.
pub const SECRET_LEN: usize = 16;

/// A fresh token from `random` bytes (36 alphabet characters; a byte is
/// used only when below 252 so every character is equally likely).
/// Returns `None` when `random` ran out before 22 characters were drawn.
pub fn from_random(random: &[u8]) -> Option<(String, String)> {
    const ALPHABET: &[u8; 36] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let chars: String = random
        .iter()
        .filter(|&&b| b < 252)
        .map(|&b| ALPHABET[usize::from(b % 36)] as char)
        .take(ID_LEN + SECRET_LEN)
        .collect();
    if chars.len() < ID_LEN + SECRET_LEN {
        return None;
    }
    let (id, secret) = chars.split_at(ID_LEN);
    Some((id.to_owned(), secret.to_owned()))
}

/// A fresh token (id, secret) from the system's secure random source.
pub fn generate() -> Result<(String, String), String> {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 64];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| "no system randomness for a token".to_owned())?;
    // 64 bytes hold 22 usable ones with overwhelming probability.
    from_random(&bytes).ok_or_else(|| "not enough randomness for a token; retry".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_tokens_have_the_format_and_differ() {
        let (id, secret) = generate().unwrap();
        assert_eq!(id.len(), ID_LEN);
        assert_eq!(secret.len(), SECRET_LEN);
        assert!(
            id.bytes()
                .chain(secret.bytes())
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        );
        assert_ne!(generate().unwrap(), (id, secret));
        assert_eq!(from_random(&[251; 21]), None, "too few usable bytes");
        assert_eq!(from_random(&[252; 64]), None, "bytes >= 252 are skipped");
    }
}
