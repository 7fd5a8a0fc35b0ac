//! A typed reader over a span-carrying TOML document that collects every error with its
//! location instead of stopping at the first one (serde's derive stops at the first). No I/O.

use std::borrow::Cow;
use std::ops::Range;
use std::time::Duration;

use toml_edit::{Item, TableLike, Value};

use super::duration;

/// One problem found in the file, at a byte offset of the source.
#[derive(Debug, Clone)]
pub struct Diag {
    pub offset: usize,
    pub message: String,
}

/// A string with where it stands in the source.
pub type Located<'a> = (&'a str, Option<Range<usize>>);

pub struct Reader {
    pub diags: Vec<Diag>,
}

/// The byte span of an item, falling back to 0 for synthesized items.
pub fn span_of(item: &Item) -> Option<Range<usize>> {
    match item {
        Item::Value(v) => v.span(),
        Item::Table(t) => t.span(),
        Item::ArrayOfTables(a) => a.span(),
        Item::None => None,
    }
}

fn type_name(item: &Item) -> &'static str {
    match item {
        Item::Value(Value::String(_)) => "a string",
        Item::Value(Value::Integer(_)) => "an integer",
        Item::Value(Value::Float(_)) => "a float",
        Item::Value(Value::Boolean(_)) => "a boolean",
        Item::Value(Value::Datetime(_)) => "a date",
        Item::Value(Value::Array(_)) => "an array",
        Item::Value(Value::InlineTable(_)) | Item::Table(_) => "a table",
        Item::ArrayOfTables(_) => "an array of tables",
        Item::None => "nothing",
    }
}

/// " (did you mean `x`?)" naming the known word closest to a misspelt `word` (at most two
/// edits away; the first in sort order among equals), else nothing. `ignore_case` compares
/// without case, for files whose keys mix cases.
pub fn did_you_mean<'a>(
    word: &str,
    known: impl IntoIterator<Item = &'a str>,
    ignore_case: bool,
) -> String {
    let word = folded(word, ignore_case);
    known
        .into_iter()
        .map(|c| (distance(&word, &folded(c, ignore_case)), c))
        .filter(|(d, _)| *d <= 2)
        .min()
        .map(|(_, c)| format!(" (did you mean `{c}`?)"))
        .unwrap_or_default()
}

fn folded(s: &str, ignore_case: bool) -> Cow<'_, str> {
    if ignore_case {
        Cow::Owned(s.to_ascii_lowercase())
    } else {
        Cow::Borrowed(s)
    }
}

/// Edit distance (Levenshtein).
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

impl Reader {
    pub fn new() -> Self {
        Reader { diags: Vec::new() }
    }

    pub fn err(&mut self, span: Option<Range<usize>>, message: impl Into<String>) {
        self.diags.push(Diag {
            offset: span.map(|r| r.start).unwrap_or(0),
            message: message.into(),
        });
    }

    pub fn err_at(&mut self, item: &Item, message: impl Into<String>) {
        self.err(span_of(item), message);
    }

    /// Report every key of `t` that is not in `known`, at the key itself.
    pub fn check_keys(&mut self, t: &dyn TableLike, section: &str, known: &[&str]) {
        for (k, _) in t.iter() {
            if known.contains(&k) {
                continue;
            }
            let span = t.key(k).and_then(|key| key.span());
            let hint = did_you_mean(k, known.iter().copied(), false);
            self.err(span, format!("unknown key `{k}` in {section}{hint}"));
        }
    }

    fn typed<'a, T>(
        &mut self,
        t: &'a dyn TableLike,
        key: &str,
        want: &str,
        get: impl Fn(&'a Item) -> Option<T>,
    ) -> Option<(T, &'a Item)> {
        let item = t.get(key)?;
        match get(item) {
            Some(v) => Some((v, item)),
            None => {
                self.err_at(
                    item,
                    format!("`{key}` must be {want}, not {}", type_name(item)),
                );
                None
            }
        }
    }

    pub fn string<'a>(&mut self, t: &'a dyn TableLike, key: &str) -> Option<(&'a str, &'a Item)> {
        self.typed(t, key, "a string", |i| i.as_str())
    }

    /// One of a few words, each standing for a value; `default` when the key is absent or
    /// (reported) not one of them.
    pub fn choice<T: Copy>(
        &mut self,
        t: &dyn TableLike,
        key: &str,
        choices: &[(&str, T)],
        default: T,
    ) -> T {
        let Some((s, item)) = self.string(t, key) else {
            return default;
        };
        if let Some((_, v)) = choices.iter().find(|(name, _)| *name == s) {
            return *v;
        }
        let names: Vec<String> = choices.iter().map(|(n, _)| format!("{n:?}")).collect();
        let (last, rest) = names
            .split_last()
            .map_or(("", &[][..]), |(l, r)| (l.as_str(), r));
        let list = if rest.is_empty() {
            last.to_string()
        } else {
            format!("{} or {last}", rest.join(", "))
        };
        self.err_at(item, format!("`{key}` must be {list}, not {s:?}"));
        default
    }

    pub fn boolean(&mut self, t: &dyn TableLike, key: &str) -> Option<bool> {
        self.typed(t, key, "true or false", |i| i.as_bool())
            .map(|(v, _)| v)
    }

    /// An integer within `lo..=hi`.
    pub fn int(&mut self, t: &dyn TableLike, key: &str, lo: i64, hi: i64) -> Option<i64> {
        let (v, item) = self.typed(t, key, "an integer", |i| i.as_integer())?;
        if v < lo || v > hi {
            self.err_at(
                item,
                format!("`{key}` must be between {lo} and {hi}, not {v}"),
            );
            return None;
        }
        Some(v)
    }

    pub fn duration<'a>(
        &mut self,
        t: &'a dyn TableLike,
        key: &str,
    ) -> Option<(Duration, &'a Item)> {
        let (s, item) = self.string(t, key)?;
        match duration::parse(s) {
            Ok(d) => Some((d, item)),
            Err(e) => {
                self.err_at(item, format!("`{key}`: {e}"));
                None
            }
        }
    }

    /// A string, or an array of strings; each element comes with its own item for locations.
    pub fn strings<'a>(&mut self, t: &'a dyn TableLike, key: &str) -> Option<Vec<Located<'a>>> {
        let item = t.get(key)?;
        if let Some(s) = item.as_str() {
            return Some(vec![(s, span_of(item))]);
        }
        let Some(arr) = item.as_array() else {
            self.err_at(
                item,
                format!(
                    "`{key}` must be a string or an array of strings, not {}",
                    type_name(item)
                ),
            );
            return None;
        };
        let mut out = Vec::new();
        for v in arr.iter() {
            match v.as_str() {
                Some(s) => out.push((s, v.span())),
                None => self.err(v.span(), format!("`{key}`: every element must be a string")),
            }
        }
        Some(out)
    }

    /// An array of integers within `lo..=hi`.
    pub fn ints(&mut self, t: &dyn TableLike, key: &str, lo: i64, hi: i64) -> Option<Vec<i64>> {
        let (arr, _) = self.typed(t, key, "an array of integers", |i| i.as_array())?;
        let mut out = Vec::new();
        for v in arr.iter() {
            match v.as_integer() {
                Some(n) if (lo..=hi).contains(&n) => out.push(n),
                Some(n) => self.err(
                    v.span(),
                    format!("`{key}`: {n} is not between {lo} and {hi}"),
                ),
                None => self.err(
                    v.span(),
                    format!("`{key}`: every element must be an integer"),
                ),
            }
        }
        Some(out)
    }
}

/// 1-based line and column (in characters) of a byte offset.
pub fn line_col(src: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(src.len());
    let before = &src[..floor_char_boundary(src, offset)];
    let line = before.matches('\n').count() + 1;
    let col = before
        .rfind('\n')
        .map_or(before, |i| &before[i + 1..])
        .chars()
        .count()
        + 1;
    (line, col)
}

fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    while i > 0 && !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions() {
        let src = "a = 1\nbb = 2\n";
        assert_eq!(line_col(src, 0), (1, 1));
        assert_eq!(line_col(src, 6), (2, 1));
        assert_eq!(line_col(src, 9), (2, 4));
        assert_eq!(line_col(src, 999), (3, 1));
    }

    #[test]
    fn edit_distance() {
        assert_eq!(distance("algoritm", "algorithm"), 1);
        assert_eq!(distance("", "ab"), 2);
    }
}
