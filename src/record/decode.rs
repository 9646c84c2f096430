//! Decoding lines from an entry's `encoding` into UTF-8 (WHATWG encodings, via `encoding_rs`).
//!
//! Lines were already cut at the encoded newline (`tail::reader::Newline`), so each line decodes on
//! its own; offsets stay those of the file's bytes. Invalid sequences become U+FFFD and are counted,
//! never dropped: the record still ships, and the operator sees the count.

use encoding_rs::{DecoderResult, Encoding};

use crate::tail::reader::Newline;

/// How lines of `encoding` end in the file.
pub fn newline_of(encoding: Option<&'static Encoding>) -> Newline {
    match encoding {
        Some(e) if e == encoding_rs::UTF_16LE => Newline::Utf16Le,
        Some(e) if e == encoding_rs::UTF_16BE => Newline::Utf16Be,
        _ => Newline::Byte,
    }
}

/// Appends `line`, decoded from `encoding`, to `out`; returns how many invalid sequences were
/// replaced by U+FFFD. `at_file_start`: the line starts at byte 0, where a byte order mark is the
/// file's, not text.
pub fn decode_into(
    encoding: &'static Encoding,
    line: &[u8],
    at_file_start: bool,
    out: &mut String,
) -> u64 {
    let before = out.len();
    let mut decoder = encoding.new_decoder_without_bom_handling();
    let room = |d: &encoding_rs::Decoder, n: usize| {
        d.max_utf8_buffer_length_without_replacement(n)
            .unwrap_or(n.saturating_mul(3))
    };
    out.reserve(room(&decoder, line.len()));
    let mut src = line;
    let mut errors = 0;
    loop {
        let (result, read) = decoder.decode_to_string_without_replacement(src, out, true);
        src = &src[read..];
        match result {
            DecoderResult::InputEmpty => break,
            DecoderResult::OutputFull => out.reserve(room(&decoder, src.len()).max(4)),
            DecoderResult::Malformed(_, _) => {
                out.push('\u{FFFD}');
                errors += 1;
            }
        }
    }
    if at_file_start && out[before..].starts_with('\u{FEFF}') {
        out.replace_range(before..before + '\u{FEFF}'.len_utf8(), "");
    }
    errors
}

/// `line` as UTF-8 text, invalid sequences replaced (for an envelope of lines not declared in an
/// encoding); the second value counts the replacements.
pub fn lossy_utf8(line: &[u8]) -> (std::borrow::Cow<'_, str>, u64) {
    match std::str::from_utf8(line) {
        Ok(s) => (s.into(), 0),
        Err(_) => {
            let mut out = String::with_capacity(line.len() + 3);
            let errors = decode_into(encoding_rs::UTF_8, line, false, &mut out);
            (out.into(), errors)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(label: &str, bytes: &[u8], at_start: bool) -> (String, u64) {
        let enc = Encoding::for_label(label.as_bytes()).unwrap();
        let mut out = String::new();
        let n = decode_into(enc, bytes, at_start, &mut out);
        (out, n)
    }

    #[test]
    fn legacy_encodings_decode_to_the_same_text() {
        let text = "日志 错误: 连接超时 (GBK)";
        for label in [
            "gbk",
            "gb18030",
            "big5",
            "shift_jis",
            "euc-kr",
            "utf-16le",
            "utf-16be",
        ] {
            let enc = Encoding::for_label(label.as_bytes()).unwrap();
            let sample = if label == "euc-kr" {
                "로그 오류"
            } else if label == "shift_jis" {
                "ログ エラー"
            } else if label == "big5" {
                "日誌 錯誤"
            } else {
                text
            };
            let (bytes, _, unmappable) = enc.encode(sample);
            // encode() never produces UTF-16; build it by hand.
            let bytes: Vec<u8> = match label {
                "utf-16le" => sample.encode_utf16().flat_map(u16::to_le_bytes).collect(),
                "utf-16be" => sample.encode_utf16().flat_map(u16::to_be_bytes).collect(),
                _ => {
                    assert!(!unmappable, "{label}");
                    bytes.into_owned()
                }
            };
            assert_eq!(
                decode(label, &bytes, false),
                (sample.to_owned(), 0),
                "{label}"
            );
        }
    }

    #[test]
    fn invalid_sequences_become_replacement_characters_and_are_counted() {
        // 0x81 0x20: a GBK lead byte followed by a byte that cannot trail it.
        let (text, errors) = decode("gbk", b"a\x81\x20b\xff", false);
        assert_eq!(errors, 2, "{text:?}");
        assert!(text.starts_with('a') && text.contains('b'));
        assert_eq!(text.matches('\u{FFFD}').count(), 2);
        // A lone UTF-16 surrogate.
        let (text, errors) = decode("utf-16le", &[0x41, 0, 0x00, 0xD8, 0x42, 0], false);
        assert_eq!((text.as_str(), errors), ("A\u{FFFD}B", 1));
        assert_eq!(lossy_utf8(b"ok\xffok"), ("ok\u{FFFD}ok".into(), 1));
        assert_eq!(lossy_utf8("fine ü".as_bytes()), ("fine ü".into(), 0));
    }

    #[test]
    fn a_byte_order_mark_is_dropped_only_at_the_file_start() {
        assert_eq!(
            decode("utf-16le", &[0xFF, 0xFE, b'x', 0], true),
            ("x".into(), 0)
        );
        assert_eq!(
            decode("utf-16le", &[0xFF, 0xFE, b'x', 0], false),
            ("\u{FEFF}x".into(), 0)
        );
    }
}
