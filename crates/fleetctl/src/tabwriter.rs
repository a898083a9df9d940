//! fleetctl's tables: Go's `text/tabwriter` as fleetctl configured it (minwidth 0, tabwidth 8,
//! padding 1, padchar '\t', no flags). Columns are padded with tabs to the next multiple of 8
//! past the widest cell plus one; the last cell of a row is written as is.

const TAB_WIDTH: usize = 8;
const PADDING: usize = 1;

/// Formats rows of cells (every row with the same number of cells) as fleetctl printed them.
pub fn format(rows: &[Vec<String>]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns.saturating_sub(1))
        .map(|c| {
            rows.iter()
                .filter_map(|row| row.get(c))
                .map(|cell| cell.chars().count() + PADDING)
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        for (c, cell) in row.iter().enumerate() {
            out.push_str(cell);
            if c + 1 < row.len() {
                let cell_width = widths[c].div_ceil(TAB_WIDTH) * TAB_WIDTH;
                let padding = cell_width - cell.chars().count();
                out.extend(std::iter::repeat_n('\t', padding.div_ceil(TAB_WIDTH)));
            }
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(rows: &[&[&str]], expected: &str) {
        let rows: Vec<Vec<String>> = rows
            .iter()
            .map(|r| r.iter().map(|c| c.to_string()).collect())
            .collect();
        assert_eq!(format(&rows), expected);
    }

    #[test]
    fn tab_padding() {
        check(
            &[&["UNIT", "ACTIVE"], &["a.service", "active"]],
            "UNIT\t\tACTIVE\na.service\tactive\n",
        );
        check(
            &[&["MACHINE", "IP"], &["1234567", "x"]],
            "MACHINE\tIP\n1234567\tx\n",
        );
        check(&[&["12345678", "x"]], "12345678\tx\n");
        check(&[], "");
    }
}
