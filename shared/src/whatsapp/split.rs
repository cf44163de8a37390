//! Splitting a long answer into messages WhatsApp accepts, cutting where a reader would expect a
//! break.
//!
//! WhatsApp limits a text body to 4096 characters as JavaScript and Java count them: UTF-16 code
//! units, so that an emoji outside the Basic Multilingual Plane counts twice. A cut never falls
//! inside a grapheme cluster (an emoji with a skin tone, a flag, a family joined by ZWJ, a letter
//! with its accents), which would show the user broken glyphs.

use unicode_segmentation::UnicodeSegmentation;

/// The longest text body WhatsApp accepts, in UTF-16 code units.
pub const MAX_TEXT_UTF16: usize = 4096;

/// Marks that end a sentence when a space follows.
const SENTENCE_ENDS: [char; 6] = ['.', '!', '?', '。', '！', '？'];

/// Marks that end a sentence even with no space after them, as in Chinese and Japanese.
const CJK_SENTENCE_ENDS: [char; 3] = ['。', '！', '？'];

/// How good a place to cut is, worst first, so that the best kind found wins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Break {
    /// Inside a word, between two grapheme clusters: only when there is nothing else.
    MidWord,
    /// At a space.
    Whitespace,
    /// After `. `, `! `, `? ` or a CJK full stop, exclamation or question mark.
    Sentence,
    /// At a line break.
    Line,
    /// At a blank line.
    Paragraph,
}

/// The length of `text` as WhatsApp counts it: UTF-16 code units.
pub fn utf16_len(text: &str) -> usize {
    text.chars().map(char::len_utf16).sum()
}

/// Splits `text` into parts of at most `max_units` UTF-16 code units each, in order.
///
/// Each cut is made as late as the limit allows at the best kind of break available: a blank
/// line, else a line break, else a sentence end (`. `, `! `, `? `, `。`, `！`, `？`), else a space,
/// and only as a last resort inside a word, between two grapheme clusters. Parts are trimmed and
/// never empty; only the whitespace at the cuts is lost. A text that fits is one part; a blank
/// text gives none. A `max_units` of 0 is taken as 1. Only a single grapheme cluster longer than
/// the limit is cut inside (between characters), and a part always holds at least one
/// character, so that a limit under 2 still makes progress through an emoji.
pub fn split_message(text: &str, max_units: usize) -> Vec<String> {
    let max_units = max_units.max(1);
    let mut parts = Vec::new();
    let mut rest = text.trim();
    while !rest.is_empty() {
        let Some(window) = Window::of(rest, max_units) else {
            parts.push(rest.to_owned());
            break;
        };
        let cut = best_cut(rest, &window);
        parts.push(rest[..cut].trim_end().to_owned());
        rest = rest[cut..].trim_start();
    }
    parts
}

/// What of `rest` fits in one part, when not all of it does.
struct Window {
    /// The byte index of the first grapheme cluster that does not fit: the latest cut.
    end: usize,
    /// The byte indexes, ascending, of the grapheme clusters that start inside the window.
    boundaries: Vec<usize>,
}

impl Window {
    /// The window of `rest` for `max_units`, or `None` when the whole of `rest` fits.
    fn of(rest: &str, max_units: usize) -> Option<Self> {
        let mut units = 0;
        let mut boundaries = Vec::new();
        for (index, grapheme) in rest.grapheme_indices(true) {
            let length = utf16_len(grapheme);
            if units + length > max_units {
                let end = if index == 0 {
                    char_cut(grapheme, max_units)
                } else {
                    index
                };
                return Some(Self { end, boundaries });
            }
            boundaries.push(index);
            units += length;
        }
        None
    }

    /// Whether a part may end at byte `at`: not at the very start, and between two clusters.
    fn allows(&self, at: usize) -> bool {
        at > 0 && (at == self.end || self.boundaries.binary_search(&at).is_ok())
    }
}

/// Where to cut a grapheme cluster that is longer than the limit on its own: after as many of
/// its characters as fit, and after one at least.
fn char_cut(grapheme: &str, max_units: usize) -> usize {
    let mut units = 0;
    for (index, c) in grapheme.char_indices() {
        units += c.len_utf16();
        if units > max_units {
            return if index == 0 { c.len_utf8() } else { index };
        }
    }
    grapheme.len()
}

/// The byte index in `rest` (which starts with a non-whitespace character) at which to end the
/// next part, in `1..=window.end`: the latest of the best kind of break.
fn best_cut(rest: &str, window: &Window) -> usize {
    let end = window.end;
    let mut best = (Break::MidWord, end);
    let mut consider = |kind: Break, at: usize| {
        if kind >= best.0 && window.allows(at) {
            best = (kind, at);
        }
    };
    let mut previous: Option<char> = None;
    // Where the current run of whitespace started, and how many line breaks it holds.
    let mut run: Option<(usize, usize)> = None;
    for (index, c) in rest.char_indices() {
        if index > end && run.is_none() {
            break;
        }
        if c.is_whitespace() {
            match &mut run {
                Some((_, newlines)) => *newlines += usize::from(c == '\n'),
                None if index <= end => run = Some((index, usize::from(c == '\n'))),
                // A run that starts past the limit cannot be a cut.
                None => break,
            }
        } else {
            if let Some((start, newlines)) = run.take() {
                // The whole run is dropped, so its start is a cut even if it ends past `end`.
                let kind = match newlines {
                    0 if rest[..start].ends_with(SENTENCE_ENDS) => Break::Sentence,
                    0 => Break::Whitespace,
                    1 => Break::Line,
                    _ => Break::Paragraph,
                };
                consider(kind, start);
                if index > end {
                    break;
                }
            }
            // A CJK sentence end needs no space after it.
            if previous.is_some_and(|p| CJK_SENTENCE_ENDS.contains(&p)) && index <= end {
                consider(Break::Sentence, index);
            }
        }
        previous = Some(c);
    }
    // `rest` is trimmed, so no run is still open here: the text ends with a visible character.
    best.1
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every part fits, is trimmed and not empty, and together the parts hold every
    /// non-whitespace character of `text`, in order.
    fn check_invariants(text: &str, max_chars: usize, parts: &[String]) {
        let max = max_chars.max(1);
        for part in parts {
            assert!(!part.is_empty(), "an empty part for {text:?}");
            assert_eq!(part.trim(), part, "an untrimmed part for {text:?}");
            assert!(
                utf16_len(part) <= max || part.chars().count() == 1,
                "a part of {} UTF-16 units (max {max}) for {text:?}",
                utf16_len(part)
            );
        }
        let visible = |s: &str| s.chars().filter(|c| !c.is_whitespace()).collect::<String>();
        assert_eq!(
            visible(&parts.concat()),
            visible(text),
            "characters lost or reordered for {text:?} (max {max})"
        );
        if utf16_len(text.trim()) <= max {
            let expected: Vec<String> = if text.trim().is_empty() {
                Vec::new()
            } else {
                vec![text.trim().to_owned()]
            };
            assert_eq!(parts, expected, "a text that fits is one part");
        }
    }

    fn split(text: &str, max_chars: usize) -> Vec<String> {
        let parts = split_message(text, max_chars);
        check_invariants(text, max_chars, &parts);
        parts
    }

    #[test]
    fn a_text_that_fits_is_one_trimmed_part() {
        assert_eq!(
            split("  Hello there!\n", MAX_TEXT_UTF16),
            vec!["Hello there!"]
        );
        let exactly = "a".repeat(MAX_TEXT_UTF16);
        assert_eq!(split(&exactly, MAX_TEXT_UTF16), vec![exactly.clone()]);
    }

    #[test]
    fn a_blank_text_gives_no_parts() {
        assert!(split("", MAX_TEXT_UTF16).is_empty());
        assert!(split(" \n\t\n  ", MAX_TEXT_UTF16).is_empty());
    }

    #[test]
    fn a_long_answer_of_paragraphs_is_cut_at_a_paragraph() {
        // Ten paragraphs of about 500 characters, each with line breaks and sentences.
        let paragraph = |n: usize| {
            let sentence = format!("Paragraph {n} says something useful. ");
            let mut p = String::new();
            while p.chars().count() < 440 {
                p.push_str(&sentence);
                if p.len().is_multiple_of(3) {
                    p.push('\n');
                }
            }
            p.trim().to_owned()
        };
        let paragraphs: Vec<String> = (0..10).map(paragraph).collect();
        let text = paragraphs.join("\n\n");
        assert!((4_500..=5_500).contains(&text.chars().count()));

        let parts = split(&text, MAX_TEXT_UTF16);
        assert_eq!(parts.len(), 2);
        // The cut is between two paragraphs: each part is whole paragraphs.
        let first_count = parts[0].split("\n\n").count();
        assert_eq!(parts[0], paragraphs[..first_count].join("\n\n"));
        assert_eq!(parts[1], paragraphs[first_count..].join("\n\n"));
        assert!(first_count >= 8, "the cut is as late as the limit allows");
    }

    #[test]
    fn a_single_huge_word_is_cut_at_the_limit() {
        let word = "x".repeat(9_000);
        let parts = split(&word, MAX_TEXT_UTF16);
        let lengths: Vec<usize> = parts.iter().map(|p| p.chars().count()).collect();
        assert_eq!(lengths, vec![4_096, 4_096, 808]);
    }

    #[test]
    fn counts_utf16_units_as_whatsapp_does() {
        // An emoji outside the Basic Multilingual Plane is two UTF-16 units: 2,048 fit.
        let emoji = "😀".repeat(5_000);
        let parts = split(&emoji, MAX_TEXT_UTF16);
        let lengths: Vec<usize> = parts.iter().map(|p| p.chars().count()).collect();
        assert_eq!(lengths, vec![2_048, 2_048, 904]);
        assert!(parts.iter().all(|p| utf16_len(p) <= MAX_TEXT_UTF16));

        // 4,000 two-byte characters fit although they are 8,000 bytes: one unit each.
        let accented = "é".repeat(4_000);
        assert_eq!(split(&accented, MAX_TEXT_UTF16), vec![accented.clone()]);

        assert_eq!(
            split("ça va? très bien! 😀 merci", 12),
            vec!["ça va?", "très bien!", "😀 merci"]
        );
        assert_eq!(utf16_len("a😀é"), 4);
    }

    #[test]
    fn never_cuts_inside_a_grapheme_cluster() {
        // Skin tone (4 units), flag (4), family joined by ZWJ (11), e + combining acute (2).
        for cluster in ["👍🏽", "🇫🇷", "👨‍👩‍👧‍👦", "e\u{301}"] {
            let units = utf16_len(cluster);
            let text = cluster.repeat(50);
            for max in units..units * 3 + 1 {
                let parts = split(&text, max);
                for part in &parts {
                    assert_eq!(
                        part.len() % cluster.len(),
                        0,
                        "{cluster:?} cut inside with max {max}: {part:?}"
                    );
                }
            }
        }
        // 1,000 flags are 4,000 units: one part; 1,100 are two parts of whole flags.
        assert_eq!(split(&"🇫🇷".repeat(1_000), MAX_TEXT_UTF16).len(), 1);
        let parts = split(&"🇫🇷".repeat(1_100), MAX_TEXT_UTF16);
        assert_eq!(parts.len(), 2);
        assert_eq!(utf16_len(&parts[0]), 4_096);
    }

    #[test]
    fn a_cluster_longer_than_the_limit_is_cut_between_characters() {
        let long = format!("a{}", "\u{301}".repeat(20));
        let parts = split(&long, 8);
        assert_eq!(parts.concat(), long);
        assert!(parts.iter().all(|p| utf16_len(p) <= 8));
        // A limit of one still makes progress through an emoji of two units.
        assert_eq!(split_message("😀😀", 1), vec!["😀", "😀"]);
    }

    #[test]
    fn prefers_a_paragraph_to_a_later_line_break() {
        assert_eq!(
            split("one two\n\nthree\nfour five", 20),
            vec!["one two", "three\nfour five"]
        );
        // A blank line holding spaces is still a blank line.
        assert_eq!(
            split("one two\n  \t\nthree\nfour five", 20),
            vec!["one two", "three\nfour five"]
        );
        assert_eq!(
            split("one two\r\n\r\nthree\r\nfour five", 20),
            vec!["one two", "three\r\nfour five"]
        );
    }

    #[test]
    fn prefers_a_line_break_to_a_later_sentence_end() {
        assert_eq!(
            split("one two\nthree. four five six", 20),
            vec!["one two", "three. four five six"]
        );
    }

    #[test]
    fn prefers_a_sentence_end_to_a_later_space() {
        assert_eq!(
            split("One. Two three four", 15),
            vec!["One.", "Two three four"]
        );
        assert_eq!(
            split("Yes! Two three four", 15),
            vec!["Yes!", "Two three four"]
        );
        assert_eq!(
            split("Why? Two three four", 15),
            vec!["Why?", "Two three four"]
        );
        // A full stop inside a word (a number, a domain) is not a sentence end.
        assert_eq!(
            split("v1.2 is out now ok", 15),
            vec!["v1.2 is out now", "ok"]
        );
    }

    #[test]
    fn cuts_after_cjk_sentence_ends_without_spaces() {
        assert_eq!(
            split("今日は晴れです。明日は雨でしょう", 10),
            vec!["今日は晴れです。", "明日は雨でしょう"]
        );
        assert_eq!(
            split("本当！そうですか？はい", 10),
            vec!["本当！そうですか？", "はい"]
        );
        // Followed by a space, a CJK full stop is still a sentence end, not a mere space.
        assert_eq!(
            split("短い。 長い 文章です", 8),
            vec!["短い。", "長い 文章です"]
        );
    }

    #[test]
    fn prefers_a_space_to_cutting_a_word() {
        assert_eq!(
            split("alpha beta gamma delta", 12),
            vec!["alpha beta", "gamma delta"]
        );
    }

    #[test]
    fn cuts_a_word_only_when_there_is_no_space() {
        assert_eq!(
            split("abcdefghij klm", 4),
            vec!["abcd", "efgh", "ij", "klm"]
        );
    }

    #[test]
    fn a_break_right_at_the_limit_is_used() {
        // The space right after the 5th character lets the first part be exactly 5.
        assert_eq!(split("abcde fghij", 5), vec!["abcde", "fghij"]);
        assert_eq!(split("abcd。efgh", 5), vec!["abcd。", "efgh"]);
        // A long run of spaces across the limit is dropped whole.
        assert_eq!(split("abc          def", 5), vec!["abc", "def"]);
    }

    #[test]
    fn a_zero_limit_is_taken_as_one() {
        assert_eq!(split_message("ab c", 0), vec!["a", "b", "c"]);
    }

    /// A small deterministic generator (xorshift64*), so that the invariants are checked over
    /// many varied texts without a property-testing crate.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }

        fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
            items[self.below(items.len())]
        }
    }

    fn generated_text(rng: &mut Rng) -> String {
        const WORDS: &[&str] = &[
            "a",
            "the",
            "WhatsApp",
            "answer",
            "héllo",
            "naïve",
            "😀",
            "👍🏽",
            "日本語",
            "中文",
            "x",
            "supercalifragilistic",
            "3.14",
            "e.g.",
            "“quoted”",
        ];
        const SEPARATORS: &[&str] = &[
            " ", " ", " ", " ", "  ", "\n", "\n\n", "\n \n", ". ", "! ", "? ", "。", "！", "？",
            "\t", "\r\n", ", ", "",
        ];
        let words = rng.below(120);
        let mut text = String::new();
        if rng.below(4) == 0 {
            text.push_str(rng.pick(&[" ", "\n", "\n\n"]));
        }
        for _ in 0..words {
            text.push_str(rng.pick(WORDS));
            text.push_str(rng.pick(SEPARATORS));
        }
        if rng.below(10) == 0 {
            text.push_str(&"z".repeat(rng.below(200)));
        }
        text
    }

    #[test]
    fn invariants_hold_over_generated_texts() {
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        for _ in 0..3_000 {
            let text = generated_text(&mut rng);
            let max_chars = match rng.below(4) {
                0 => 1 + rng.below(5),
                1 => 5 + rng.below(40),
                2 => 40 + rng.below(400),
                _ => MAX_TEXT_UTF16,
            };
            split(&text, max_chars);
        }
    }

    #[test]
    fn no_part_is_cut_mid_word_when_a_space_was_available() {
        let mut rng = Rng(42);
        for _ in 0..1_000 {
            let text = generated_text(&mut rng);
            let max_chars = 8 + rng.below(60);
            let parts = split(&text, max_chars);
            // Walk the text alongside the parts; a cut mid-word leaves no whitespace between two
            // parts, and is only allowed when the part's window had no break in it.
            let mut rest = text.trim();
            for pair in parts.windows(2) {
                let part = &pair[0];
                let after = &rest[part.len()..];
                let cut_mid_word = after.starts_with(|c: char| !c.is_whitespace())
                    && !part.ends_with(['。', '！', '？']);
                if cut_mid_word {
                    // The characters that start within the limit: a space among them was a break.
                    let mut units = 0;
                    let window: String = rest
                        .chars()
                        .take_while(|c| {
                            let starts_within = units <= max_chars;
                            units += c.len_utf16();
                            starts_within
                        })
                        .collect();
                    assert!(
                        !window.contains(char::is_whitespace),
                        "cut {part:?} mid-word although {window:?} has a space"
                    );
                }
                rest = after.trim_start();
            }
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(500))]

        /// Over any text (any Unicode scalar values), every cut lies between grapheme clusters
        /// of the original text unless one cluster is longer than the limit.
        #[test]
        fn any_text_is_cut_between_clusters(text in "\\PC{0,300}|[\\s\\S]{0,300}", max in 1usize..64) {
            let parts = split(&text, max);
            let trimmed = text.trim();
            let longest_cluster = trimmed.graphemes(true).map(utf16_len).max().unwrap_or(0);
            let mut offset = 0;
            for part in &parts {
                let start = offset + trimmed[offset..].find(part.as_str()).unwrap_or(0);
                let cut = start + part.len();
                if longest_cluster <= max {
                    let mut cursor = unicode_segmentation::GraphemeCursor::new(cut, trimmed.len(), true);
                    proptest::prop_assert!(
                        cursor.is_boundary(trimmed, 0).unwrap_or(false),
                        "cut at byte {} of {:?} (max {})", cut, trimmed, max
                    );
                }
                offset = cut;
            }
        }
    }
}
