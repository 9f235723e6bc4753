//! Confirmation of destructive or disruptive commands.
//!
//! The rules: `--yes` skips the question; without it a terminal on stdin is
//! needed to ask, otherwise the command refuses with exit 64 naming `--yes`
//! (scripts never hang on a prompt nor guess an answer). Questions go to
//! stderr so stdout keeps only the command's output.

use std::io::{BufRead, Write};

use crate::exit::{self, Failure};

/// Whether a command may go ahead or must ask first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Confirmation {
    /// `--yes` was given.
    Given,
    /// Ask on the terminal.
    Ask,
}

/// Applies the rules for `action` ("resize pool web"): `Given` with `--yes`,
/// `Ask` on a terminal, else exit 64 naming `--yes`.
pub fn confirmation(yes: bool, stdin_is_terminal: bool, action: &str) -> Result<Confirmation, Failure> {
    match (yes, stdin_is_terminal) {
        (true, _) => Ok(Confirmation::Given),
        (false, true) => Ok(Confirmation::Ask),
        (false, false) => Err(Failure::usage(format!(
            "refusing to {action} without confirmation: stdin is not a terminal; pass --yes"
        ))),
    }
}

/// Writes `question` and reads one line; only `y`/`yes` (any case) is a
/// yes. End of input is a no.
pub fn ask_yes_no(
    question: &str,
    input: &mut impl BufRead,
    prompt: &mut impl Write,
) -> std::io::Result<bool> {
    let answer = ask_line(question, input, prompt)?;
    let answer = answer.to_ascii_lowercase();
    Ok(answer == "y" || answer == "yes")
}

/// Writes `question` and reads one line; a yes only when it is exactly
/// `expected` (surrounding blanks ignored). End of input is a no.
pub fn ask_typed(
    question: &str,
    expected: &str,
    input: &mut impl BufRead,
    prompt: &mut impl Write,
) -> std::io::Result<bool> {
    Ok(ask_line(question, input, prompt)? == expected)
}

fn ask_line(question: &str, input: &mut impl BufRead, prompt: &mut impl Write) -> std::io::Result<String> {
    write!(prompt, "{question} ")?;
    prompt.flush()?;
    let mut line = String::new();
    input.read_line(&mut line)?;
    Ok(line.trim().to_string())
}

/// Asks `question` on the terminal (stdin, prompt on stderr); a "no" is
/// the [`declined`] failure saying `not_done` ("pool web was not resized").
pub fn ask_or_decline(question: &str, not_done: &str) -> anyhow::Result<()> {
    let yes = ask_yes_no(question, &mut std::io::stdin().lock(), &mut std::io::stderr())
        .map_err(|e| anyhow::anyhow!("reading the answer: {e}"))?;
    if yes {
        Ok(())
    } else {
        Err(declined(not_done).into())
    }
}

/// The failure for a "no" answer (exit 1): `aborted; {what}`.
pub fn declined(what: &str) -> Failure {
    Failure::new(exit::UNEXPECTED, format!("aborted; {what}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yes_skips_the_question_a_terminal_asks_and_no_terminal_refuses_naming_yes() {
        assert_eq!(confirmation(true, false, "x").unwrap(), Confirmation::Given);
        assert_eq!(confirmation(true, true, "x").unwrap(), Confirmation::Given);
        assert_eq!(confirmation(false, true, "x").unwrap(), Confirmation::Ask);
        let err = confirmation(false, false, "destroy pool web").unwrap_err();
        assert_eq!(err.code, exit::USAGE);
        assert_eq!(
            err.message,
            "refusing to destroy pool web without confirmation: stdin is not a terminal; pass --yes"
        );
    }

    #[test]
    fn only_y_or_yes_confirms() {
        for (input, want) in [
            ("y\n", true),
            ("YES\n", true),
            (" yes \n", true),
            ("n\n", false),
            ("\n", false),
            ("", false),
            ("yess\n", false),
        ] {
            let mut prompt = Vec::new();
            let got = ask_yes_no("Resize pool web? [y/N]", &mut input.as_bytes(), &mut prompt).unwrap();
            assert_eq!(got, want, "{input:?}");
            assert_eq!(String::from_utf8(prompt).unwrap(), "Resize pool web? [y/N] ");
        }
    }

    #[test]
    fn typing_the_exact_name_confirms() {
        let q = "Type the pool name to confirm:";
        for (input, want) in [
            ("web\n", true),
            ("  web  \n", true),
            ("Web\n", false),
            ("y\n", false),
            ("", false),
        ] {
            let mut prompt = Vec::new();
            assert_eq!(
                ask_typed(q, "web", &mut input.as_bytes(), &mut prompt).unwrap(),
                want,
                "{input:?}"
            );
            assert_eq!(String::from_utf8(prompt).unwrap(), format!("{q} "));
        }
        assert_eq!(declined("pool web was not destroyed").code, 1);
    }
}
