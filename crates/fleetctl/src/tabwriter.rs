//! fleetctl's tables: Go's `text/tabwriter` as fleetctl configured it (minwidth 0, tabwidth 8,
//! padding 1, padchar '\t', no flags), ported with its column-block algorithm: a tab inside a
//! cell's text separates cells too, and a column's width is taken over each run of
//! consecutive lines that have that column, exactly as Go did.

const TAB_WIDTH: usize = 8;
const PADDING: usize = 1;

/// Formats rows of cells as fleetctl printed them.
pub fn format(rows: &[Vec<String>]) -> String {
    // Go sees text: cells joined by tabs, then split on every tab, embedded ones included.
    let lines: Vec<Vec<&str>> = rows
        .iter()
        .map(|row| row.iter().flat_map(|cell| cell.split('\t')).collect())
        .collect();
    let mut out = String::new();
    let mut widths = Vec::new();
    format_block(&lines, 0, lines.len(), &mut widths, &mut out);
    out
}

/// Go's `Writer.format`: lays out lines `from..to` given the widths of the columns to the left.
fn format_block(
    lines: &[Vec<&str>],
    mut from: usize,
    to: usize,
    widths: &mut Vec<usize>,
    out: &mut String,
) {
    let column = widths.len();
    let mut this = from;
    while this < to {
        // Only tab-terminated cells form columns: a line's last cell never does.
        if column + 1 >= lines[this].len() {
            this += 1;
            continue;
        }
        write_lines(lines, from, this, widths, out);
        from = this;
        let mut width = 0;
        while this < to && column + 1 < lines[this].len() {
            width = width.max(lines[this][column].chars().count() + PADDING);
            this += 1;
        }
        widths.push(width);
        format_block(lines, from, this, widths, out);
        widths.pop();
        from = this;
    }
    write_lines(lines, from, to, widths, out);
}

fn write_lines(lines: &[Vec<&str>], from: usize, to: usize, widths: &[usize], out: &mut String) {
    for line in &lines[from..to] {
        for (j, cell) in line.iter().enumerate() {
            out.push_str(cell);
            if j < widths.len() {
                let cell_width = widths[j].div_ceil(TAB_WIDTH) * TAB_WIDTH;
                let padding = cell_width - cell.chars().count();
                out.extend(std::iter::repeat_n('\t', padding.div_ceil(TAB_WIDTH)));
            }
        }
        out.push('\n');
    }
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
        // A tab inside a cell starts a new cell, as in Go.
        check(
            &[&["a", "b", "c"], &["x\ty", "z", "w"]],
            "a\tb\tc\nx\ty\tz\tw\n",
        );
    }
}
