//! Keeping secrets out of logs and errors: [`redact`] hides anything shaped
//! like a bootstrap token, a certificate key, kubeconfig credentials or a
//! PEM private key; [`display_command`] shows a command line with the
//! values of secret flags replaced.

use std::path::Path;

use super::checks::{is_hex64, is_token};

pub(super) const REDACTED: &str = "<redacted>";

/// Flags whose value is a secret.
const SECRET_FLAGS: [&str; 5] = [
    "--token",
    "--certificate-key",
    "--discovery-token",
    "--tls-bootstrap-token",
    "--password",
];

/// The command line for logs and errors, secret flag values replaced.
pub fn display_command(program: &Path, args: &[String]) -> String {
    let mut out = program.display().to_string();
    let mut hide_next = false;
    for arg in args {
        out.push(' ');
        if hide_next {
            out.push_str(REDACTED);
            hide_next = false;
            continue;
        }
        if SECRET_FLAGS.contains(&arg.as_str()) {
            hide_next = true;
            out.push_str(arg);
            continue;
        }
        if let Some((flag, _)) = arg.split_once('=')
            && SECRET_FLAGS.contains(&flag)
        {
            out.push_str(flag);
            out.push('=');
            out.push_str(REDACTED);
            continue;
        }
        out.push_str(&redact(arg));
    }
    out
}

/// Hides secrets in any text: bootstrap tokens (`abcdef.<redacted>`: the
/// id part is public), certificate keys (64 hex digits, but not the
/// `sha256:` CA hash, which is public), kubeconfig credentials
/// (`client-key-data:`, `client-certificate-data:`, `token:`, `password:`
/// values) and PEM private-key blocks.
pub fn redact(text: &str) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut in_private_key = false;
    for line in text.split('\n') {
        if line.contains("-----BEGIN") && line.contains("PRIVATE KEY-----") {
            in_private_key = !line.contains("-----END");
            out.push(REDACTED.to_owned());
            continue;
        }
        if in_private_key {
            if line.contains("-----END") {
                in_private_key = false;
            }
            continue;
        }
        let trimmed = line.trim_start();
        let indent = &line[..line.len() - trimmed.len()];
        let trimmed_key = trimmed.trim_start_matches("- ");
        if let Some((key, _)) = trimmed_key.split_once(':')
            && matches!(
                key.trim(),
                "client-key-data" | "client-certificate-data" | "token" | "password"
            )
        {
            let prefix = &trimmed[..trimmed.len() - trimmed_key.len()];
            out.push(format!("{indent}{prefix}{}: {REDACTED}", key.trim()));
            continue;
        }
        out.push(redact_words(line));
    }
    out.join("\n")
}

/// Token- and key-shaped words of one line.
fn redact_words(line: &str) -> String {
    let bytes = line.as_bytes();
    let is_word = |b: u8| b.is_ascii_alphanumeric() || b == b'.';
    let mut out = String::with_capacity(line.len());
    let mut i = 0;
    while i < bytes.len() {
        if !is_word(bytes[i]) {
            // Safe: non-word bytes include every UTF-8 lead/continuation
            // byte, pushed back one char at a time below.
            let ch = line[i..].chars().next().expect("in bounds");
            out.push(ch);
            i += ch.len_utf8();
            continue;
        }
        let start = i;
        while i < bytes.len() && is_word(bytes[i]) {
            i += 1;
        }
        let word = &line[start..i];
        let after_sha = line[..start].ends_with("sha256:");
        out.push_str(&redact_word(word, after_sha));
    }
    out
}

fn redact_word(word: &str, after_sha256: bool) -> String {
    // A sentence may end right after a secret: "key <64 hex>."
    let core = word.trim_end_matches('.');
    let tail = &word[core.len()..];
    if is_token(core) {
        return format!("{}.{REDACTED}{tail}", &core[..6]);
    }
    if is_hex64(core) && !after_sha256 {
        return format!("{REDACTED}{tail}");
    }
    word.to_owned()
}
