//! A small column formatter: left-aligned cells separated by two spaces,
//! no trailing whitespace.

/// Rows of cells under a header.
#[derive(Debug, Clone, Default)]
pub struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

const GAP: &str = "  ";

impl Table {
    pub fn new<I, S>(header: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self {
            header: header.into_iter().map(Into::into).collect(),
            rows: Vec::new(),
        }
    }

    pub fn row<I, S>(&mut self, cells: I)
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.rows.push(cells.into_iter().map(Into::into).collect());
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Renders the header (if any) and rows, each line ending in `\n`.
    pub fn render(&self) -> String {
        let lines: Vec<&Vec<String>> = std::iter::once(&self.header)
            .filter(|h| !h.is_empty())
            .chain(self.rows.iter())
            .collect();
        render_lines(&lines)
    }
}

/// Renders `key: value` pairs with the values aligned.
pub fn key_values(pairs: &[(&str, String)]) -> String {
    let width = pairs
        .iter()
        .map(|(k, _)| k.chars().count() + 1)
        .max()
        .unwrap_or(0);
    let mut out = String::new();
    for (key, value) in pairs {
        let label = format!("{key}:");
        let line = format!("{label:<width$}{GAP}{value}");
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

fn render_lines(lines: &[&Vec<String>]) -> String {
    let columns = lines.iter().map(|l| l.len()).max().unwrap_or(0);
    let mut widths = vec![0; columns];
    for line in lines {
        for (i, cell) in line.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for line in lines {
        let mut text = String::new();
        for (i, cell) in line.iter().enumerate() {
            if i > 0 {
                text.push_str(GAP);
            }
            text.push_str(cell);
            let pad = widths[i] - cell.chars().count();
            text.extend(std::iter::repeat_n(' ', pad));
        }
        out.push_str(text.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_are_left_aligned_with_two_spaces_and_no_trailing_blanks() {
        let mut t = Table::new(["ID", "HOSTNAME", "STATE"]);
        t.row(["3f2a9c1d", "sim-a-1", "ready"]);
        t.row(["77", "a-much-longer-name", "down"]);
        assert_eq!(
            t.render(),
            "ID        HOSTNAME            STATE\n\
             3f2a9c1d  sim-a-1             ready\n\
             77        a-much-longer-name  down\n"
        );
    }

    #[test]
    fn widths_count_characters_not_bytes() {
        let mut t = Table::new(["A", "B"]);
        t.row(["é", "x"]);
        assert_eq!(t.render(), "A  B\né  x\n");
    }

    #[test]
    fn empty_last_cells_leave_no_trailing_spaces() {
        let mut t = Table::new(["NAME", "MESSAGE"]);
        t.row(["disk_free", ""]);
        assert_eq!(t.render(), "NAME       MESSAGE\ndisk_free\n");
        assert!(!t.is_empty());
    }

    #[test]
    fn key_values_align_values() {
        assert_eq!(
            key_values(&[
                ("Zone", "a".into()),
                ("Hostname", "sim-a-1".into()),
                ("Labels", String::new())
            ]),
            "Zone:      a\nHostname:  sim-a-1\nLabels:\n"
        );
    }
}
