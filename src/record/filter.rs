//! `include_lines` / `exclude_lines` (Filebeat's names): a record ships when no include pattern is
//! given or one matches, and no exclude pattern matches. Patterns see the record as shipped before
//! the envelope: decoded to UTF-8 and grouped by multiline.

use regex::bytes::RegexSet;

#[derive(Debug)]
pub struct LineFilter {
    include: Option<RegexSet>,
    exclude: Option<RegexSet>,
}

impl LineFilter {
    /// `None` when both lists are empty (every record ships, nothing to check).
    pub fn new(include: &[String], exclude: &[String]) -> Result<Option<LineFilter>, regex::Error> {
        let set = |list: &[String]| -> Result<Option<RegexSet>, regex::Error> {
            if list.is_empty() {
                Ok(None)
            } else {
                RegexSet::new(list).map(Some)
            }
        };
        let (include, exclude) = (set(include)?, set(exclude)?);
        Ok((include.is_some() || exclude.is_some()).then_some(LineFilter { include, exclude }))
    }

    pub fn keeps(&self, record: &[u8]) -> bool {
        self.include.as_ref().is_none_or(|s| s.is_match(record))
            && !self.exclude.as_ref().is_some_and(|s| s.is_match(record))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter(include: &[&str], exclude: &[&str]) -> Option<LineFilter> {
        let v = |l: &[&str]| l.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        LineFilter::new(&v(include), &v(exclude)).unwrap()
    }

    #[test]
    fn include_then_exclude() {
        assert!(filter(&[], &[]).is_none());
        let f = filter(&["ERROR", "^WARN"], &["healthcheck"]).unwrap();
        assert!(f.keeps(b"2026 ERROR disk full"));
        assert!(f.keeps(b"WARN slow"));
        assert!(!f.keeps(b"INFO WARN not at start"));
        assert!(!f.keeps(b"ERROR healthcheck failed"));
        let only_exclude = filter(&[], &["^DEBUG"]).unwrap();
        assert!(only_exclude.keeps(b"INFO x"));
        assert!(!only_exclude.keeps(b"DEBUG x"));
        // Multiline records: patterns see the whole group, `(?m)` anchors per line.
        let f = filter(&["(?m)^\\s+at "], &[]).unwrap();
        assert!(f.keeps(b"Exception\n    at Foo.bar"));
        assert!(LineFilter::new(&["(".into()], &[]).is_err());
    }
}
