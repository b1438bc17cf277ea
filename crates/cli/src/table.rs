//! The one table layout of the command line (`orch tasks`, `status`,
//! `cost`, `events`, `show`'s attempts, `run`'s summary): columns padded to
//! their widest cell, two spaces apart, fitted to the terminal (80 columns
//! when orch cannot tell). Columns that hold ids, statuses and numbers are
//! never cut; a title, model name or message gives way first — truncated
//! with `…`, or wrapped onto continuation lines for logs where every word
//! matters. Cells are made single-line and control characters replaced, so
//! a title a model wrote cannot break the layout or the terminal.
//!
//! Widths are measured in terminal cells (`unicode-width`), so CJK text and
//! most emoji line up too.

use unicode_width::{UnicodeWidthChar, UnicodeWidthStr};

const GAP: usize = 2;
/// A column that gives way keeps at least this many cells (or its header's
/// width, or its widest cell, whichever is smallest of the sensible ones).
const MIN_FLEX: usize = 10;
/// Terminals narrower than this are laid out as if they were this wide.
const MIN_WIDTH: usize = 40;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Align {
    Left,
    Right,
}

/// What a column does when the table is wider than the terminal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fit {
    /// Never cut (ids, statuses, numbers).
    Keep,
    /// Cut with an ellipsis.
    Truncate,
    /// Broken at spaces onto continuation lines.
    Wrap,
}

#[derive(Debug, Clone)]
pub struct Column {
    header: String,
    align: Align,
    fit: Fit,
}

impl Column {
    pub fn left(header: &str) -> Column {
        Column {
            header: header.to_string(),
            align: Align::Left,
            fit: Fit::Keep,
        }
    }
    pub fn right(header: &str) -> Column {
        Column {
            align: Align::Right,
            ..Column::left(header)
        }
    }
    /// This column is cut with `…` when the table does not fit.
    pub fn truncate(mut self) -> Column {
        self.fit = Fit::Truncate;
        self
    }
    /// This column wraps onto continuation lines when the table does not fit.
    pub fn wrap(mut self) -> Column {
        self.fit = Fit::Wrap;
        self
    }
}

enum Row {
    Cells(Vec<String>),
    /// A line of its own under the previous row, indented to the second
    /// column (for example the question a waiting task asks).
    Note(String),
}

pub struct Table {
    columns: Vec<Column>,
    rows: Vec<Row>,
}

impl Table {
    pub fn new(columns: Vec<Column>) -> Table {
        Table {
            columns,
            rows: Vec::new(),
        }
    }

    /// Adds a row; missing cells are blank, extra cells are dropped.
    pub fn row<S: AsRef<str>>(&mut self, cells: impl IntoIterator<Item = S>) {
        let mut cells: Vec<String> = cells.into_iter().map(|c| one_line(c.as_ref())).collect();
        cells.resize(self.columns.len(), String::new());
        self.rows.push(Row::Cells(cells));
    }

    /// Adds a line under the last row (see [`Row::Note`]); it is cut with
    /// `…` to fit.
    pub fn note(&mut self, text: &str) {
        self.rows.push(Row::Note(one_line(text)));
    }

    /// Prints the table on stdout, fitted to the terminal.
    pub fn print(&self) {
        for line in self.render(terminal_width()).lines() {
            println!("{line}");
        }
    }

    /// The table as text fitted to `width` cells, one line per row (more
    /// for wrapped cells), without trailing spaces.
    pub fn render(&self, width: usize) -> String {
        let width = width.max(MIN_WIDTH);
        let widths = self.fit_widths(width);
        let mut out = String::new();
        let headers: Vec<String> = self.columns.iter().map(|c| c.header.clone()).collect();
        self.render_row(&headers, &widths, &mut out);
        let indent = widths.first().map(|w| w + GAP).unwrap_or(0);
        for row in &self.rows {
            match row {
                Row::Cells(cells) => self.render_row(cells, &widths, &mut out),
                Row::Note(text) => {
                    let room = width.saturating_sub(indent).max(MIN_FLEX);
                    out.push_str(&" ".repeat(indent));
                    out.push_str(&ellipsize(text, room));
                    out.push('\n');
                }
            }
        }
        out
    }

    /// Each column's width: its widest cell, then the columns that may give
    /// way shrink (widest first) until the table fits or they reach their
    /// minimum. Columns that must not be cut keep their width even if the
    /// table then overflows.
    fn fit_widths(&self, width: usize) -> Vec<usize> {
        let mut widths: Vec<usize> = self.columns.iter().map(|c| c.header.width()).collect();
        for row in &self.rows {
            if let Row::Cells(cells) = row {
                for (w, cell) in widths.iter_mut().zip(cells) {
                    *w = (*w).max(cell.width());
                }
            }
        }
        let mins: Vec<usize> = self
            .columns
            .iter()
            .zip(&widths)
            .map(|(c, &w)| match c.fit {
                Fit::Keep => w,
                Fit::Truncate | Fit::Wrap => w.min(MIN_FLEX.max(c.header.width())),
            })
            .collect();
        let total = |ws: &[usize]| ws.iter().sum::<usize>() + GAP * ws.len().saturating_sub(1);
        while total(&widths) > width {
            let widest = (0..widths.len())
                .filter(|&i| widths[i] > mins[i])
                .max_by_key(|&i| (widths[i], i));
            match widest {
                Some(i) => widths[i] -= 1,
                None => break,
            }
        }
        widths
    }

    fn render_row(&self, cells: &[String], widths: &[usize], out: &mut String) {
        // Each cell as the lines it takes: one, or several when it wraps.
        let parts: Vec<Vec<String>> = self
            .columns
            .iter()
            .zip(cells)
            .zip(widths)
            .map(|((c, cell), &w)| match c.fit {
                Fit::Wrap if cell.width() > w => wrap(cell, w),
                Fit::Truncate | Fit::Wrap => vec![ellipsize(cell, w)],
                Fit::Keep => vec![cell.clone()],
            })
            .collect();
        let height = parts.iter().map(Vec::len).max().unwrap_or(1);
        for line_no in 0..height {
            let mut line = String::new();
            for (i, ((c, part), &w)) in self.columns.iter().zip(&parts).zip(widths).enumerate() {
                let text = part.get(line_no).map(String::as_str).unwrap_or("");
                if i > 0 {
                    line.push_str(&" ".repeat(GAP));
                }
                let pad = " ".repeat(w.saturating_sub(text.width()));
                match c.align {
                    Align::Left => {
                        line.push_str(text);
                        line.push_str(&pad);
                    }
                    Align::Right => {
                        line.push_str(&pad);
                        line.push_str(text);
                    }
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
    }
}

/// The terminal's width: `COLUMNS` when set, else the width of the terminal
/// on stdout, else 80 (output to a pipe or a file).
pub fn terminal_width() -> usize {
    if let Some(n) = std::env::var("COLUMNS")
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .filter(|&n| n > 0)
    {
        return n;
    }
    tty_width().unwrap_or(80)
}

#[cfg(unix)]
fn tty_width() -> Option<usize> {
    use std::io::IsTerminal;
    if !std::io::stdout().is_terminal() {
        return None;
    }
    let mut size = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ only fills the `winsize` we pass, which lives on
    // this stack frame for the whole call.
    let rc = unsafe { libc::ioctl(libc::STDOUT_FILENO, libc::TIOCGWINSZ, &mut size) };
    (rc == 0 && size.ws_col > 0).then_some(usize::from(size.ws_col))
}

#[cfg(not(unix))]
fn tty_width() -> Option<usize> {
    None
}

/// `text` on one line: runs of whitespace become one space, other control
/// characters (escape sequences) become `?`.
pub fn one_line(text: &str) -> String {
    text.split_whitespace()
        .map(|w| {
            w.chars()
                .map(|c| if c.is_control() { '?' } else { c })
                .collect::<String>()
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// `text` cut to at most `max` cells, ending in `…` when cut.
pub fn ellipsize(text: &str, max: usize) -> String {
    if text.width() <= max {
        return text.to_string();
    }
    let mut out = String::new();
    let mut used = 0;
    for c in text.chars() {
        let w = c.width().unwrap_or(0);
        if used + w + 1 > max {
            break;
        }
        out.push(c);
        used += w;
    }
    out.push('…');
    out
}

/// `text` broken at spaces into lines of at most `max` cells; a word longer
/// than a line is split.
fn wrap(text: &str, max: usize) -> Vec<String> {
    let max = max.max(1);
    let mut lines = Vec::new();
    let mut line = String::new();
    for word in text.split(' ') {
        let mut word = word.to_string();
        loop {
            let sep = usize::from(!line.is_empty());
            if line.width() + sep + word.width() <= max {
                if sep == 1 {
                    line.push(' ');
                }
                line.push_str(&word);
                break;
            }
            if !line.is_empty() {
                lines.push(std::mem::take(&mut line));
                continue;
            }
            // A word wider than a whole line: take what fits.
            let mut head = String::new();
            let mut rest = word.chars().peekable();
            while let Some(&c) = rest.peek() {
                if head.width() + c.width().unwrap_or(0) > max && !head.is_empty() {
                    break;
                }
                head.push(c);
                rest.next();
            }
            lines.push(head);
            word = rest.collect();
            if word.is_empty() {
                break;
            }
        }
    }
    if !line.is_empty() || lines.is_empty() {
        lines.push(line);
    }
    lines
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn tasks_like() -> Table {
        let mut t = Table::new(vec![
            Column::left("ID"),
            Column::left("STATUS"),
            Column::right("PRIO"),
            Column::left("TITLE").truncate(),
        ]);
        t.row(["3f2a9c1b7d0e", "failed", "0", "fix"]);
        t.row([
            "a1b2c3d4e5f6",
            "needs_human",
            "10",
            "Make the pagination helper return the last page when the offset is past the end",
        ]);
        t.note("asks: which page size?");
        t
    }

    #[test]
    fn columns_are_padded_and_the_title_fits_80_columns() {
        let out = tasks_like().render(80);
        assert_eq!(
            out,
            "\
ID            STATUS       PRIO  TITLE
3f2a9c1b7d0e  failed          0  fix
a1b2c3d4e5f6  needs_human    10  Make the pagination helper return the last pag…
              asks: which page size?
"
        );
        for line in out.lines() {
            assert!(line.width() <= 80, "{line:?} is {} wide", line.width());
        }
    }

    #[test]
    fn a_wide_terminal_shows_the_whole_title() {
        let out = tasks_like().render(200);
        assert!(out.contains("past the end\n"), "{out}");
    }

    #[test]
    fn ids_are_never_cut_even_when_nothing_fits() {
        let mut t = Table::new(vec![Column::left("ID"), Column::left("TITLE").truncate()]);
        let id = "x".repeat(60);
        t.row([id.as_str(), "a title that has to give way"]);
        let out = t.render(40);
        assert!(out.contains(&id), "{out}");
        assert!(out.contains("a title t…\n"), "{out}");
    }

    #[test]
    fn wrapped_columns_continue_under_themselves() {
        let mut t = Table::new(vec![Column::left("KIND"), Column::left("MESSAGE").wrap()]);
        t.row([
            "merged",
            "merged into main after the post-merge verification passed",
        ]);
        assert_eq!(
            t.render(40),
            "\
KIND    MESSAGE
merged  merged into main after the
        post-merge verification passed
"
        );
    }

    #[test]
    fn cells_are_made_single_line_and_escape_sequences_defused() {
        let mut t = Table::new(vec![Column::left("A"), Column::left("B")]);
        t.row(["two\nlines", "\u{1b}[31mred"]);
        assert_eq!(t.render(80), "A          B\ntwo lines  ?[31mred\n");
    }

    #[test]
    fn wide_characters_are_measured_in_cells() {
        let mut t = Table::new(vec![Column::left("T").truncate(), Column::left("N")]);
        t.row(["修正する", "1"]);
        t.row(["ab", "2"]);
        assert_eq!(t.render(80), "T         N\n修正する  1\nab        2\n");
        assert_eq!(ellipsize("修正する", 5), "修正…");
    }

    #[test]
    fn wrap_splits_words_longer_than_a_line() {
        assert_eq!(wrap("abcdefghij xy", 4), vec!["abcd", "efgh", "ij", "xy"]);
        assert_eq!(wrap("", 4), vec![""]);
    }
}
