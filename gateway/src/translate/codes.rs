//! Read v2 and CTV3 → SNOMED CT, from the NHS Data Migration mapping tables
//! (`rcsctmap2_uk_*.txt`, `ctv3sctmap2_uk_*.txt`: tab-separated, a header row). A row counts
//! when it is current (`MapStatus` 1) and clinically assured (`IS_ASSURED` 1); of several for
//! one code, the preferred term's (`00` / `P`) and then the latest wins.
//!
//! Maps are data passed in: translators stay pure. A small demo table ships
//! (`gateway/data/code-maps/`, a handful of common codes, not clinically assured); real tables
//! are configured (`[translation] read_v2_maps`, `ctv3_maps`).

use std::collections::HashMap;

#[derive(Clone, Debug)]
struct Mapped {
    concept: String,
    preferred: bool,
    effective: String,
}

/// Read v2 and CTV3 codes to SNOMED CT concepts.
#[derive(Clone, Debug, Default)]
pub struct CodeMaps {
    read_v2: HashMap<String, Mapped>,
    ctv3: HashMap<String, Mapped>,
}

const DEMO_READ_V2: &str = include_str!("../../data/code-maps/rcsctmap2_demo.txt");
const DEMO_CTV3: &str = include_str!("../../data/code-maps/ctv3sctmap2_demo.txt");

/// Which mapping table a file is.
#[derive(Clone, Copy, Debug)]
pub enum Table {
    ReadV2,
    Ctv3,
}

impl CodeMaps {
    /// The demo tables that ship with the gateway.
    pub fn demo() -> Self {
        let mut maps = Self::default();
        maps.load(Table::ReadV2, "rcsctmap2_demo.txt", DEMO_READ_V2).expect("the demo Read v2 table loads");
        maps.load(Table::Ctv3, "ctv3sctmap2_demo.txt", DEMO_CTV3).expect("the demo CTV3 table loads");
        maps
    }

    /// Add one table's current, assured rows; returns how many codes it maps.
    pub fn load(&mut self, table: Table, name: &str, text: &str) -> Result<usize, String> {
        let mut lines = text.lines().enumerate().filter(|(_, line)| !line.trim().is_empty());
        let (_, header) = lines.next().ok_or_else(|| format!("{name}: the file is empty"))?;
        let columns: Vec<String> = header.split('\t').map(|c| c.trim().to_ascii_lowercase()).collect();
        let find = |names: &[&str], fallback: usize| columns.iter().position(|c| names.contains(&c.as_str())).unwrap_or(fallback);
        // Column positions by header name, else in the documented order.
        let (code, term, concept, assured, effective, status) = match table {
            Table::ReadV2 => (
                find(&["readcode"], 1),
                find(&["termcode"], 2),
                find(&["conceptid"], 3),
                find(&["is_assured"], 5),
                find(&["effectivedate"], 6),
                find(&["mapstatus"], 7),
            ),
            Table::Ctv3 => (
                find(&["ctv3_conceptid"], 1),
                find(&["ctv3_termtype"], 3),
                find(&["sct_conceptid"], 4),
                find(&["is_assured"], 8),
                find(&["effectivedate"], 7),
                find(&["mapstatus"], 6),
            ),
        };
        let target = match table {
            Table::ReadV2 => &mut self.read_v2,
            Table::Ctv3 => &mut self.ctv3,
        };
        let before = target.len();
        for (index, line) in lines {
            let fields: Vec<&str> = line.split('\t').map(str::trim).collect();
            let field = |n: usize| fields.get(n).copied().unwrap_or("");
            if fields.len() <= code.max(concept) {
                return Err(format!("{name}:{}: expected tab-separated columns, found {} field(s)", index + 1, fields.len()));
            }
            if field(status) != "1" || field(assured) != "1" || field(code).is_empty() {
                continue;
            }
            let concept_id = field(concept);
            // `_DRUG` and other placeholders are not concepts.
            if concept_id.is_empty() || !concept_id.bytes().all(|b| b.is_ascii_digit()) {
                continue;
            }
            let candidate = Mapped {
                concept: concept_id.to_owned(),
                preferred: matches!(field(term), "00" | "P"),
                effective: field(effective).to_owned(),
            };
            let better = |existing: &Mapped| (candidate.preferred, &candidate.effective) > (existing.preferred, &existing.effective);
            match target.get(field(code)) {
                Some(existing) if !better(existing) => {}
                _ => {
                    target.insert(field(code).to_owned(), candidate.clone());
                }
            }
        }
        Ok(target.len() - before)
    }

    pub fn read_v2(&self, code: &str) -> Option<&str> {
        self.read_v2.get(code).map(|mapped| mapped.concept.as_str())
    }

    pub fn ctv3(&self, code: &str) -> Option<&str> {
        self.ctv3.get(code).map(|mapped| mapped.concept.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn current_assured_preferred_latest_rows_win() {
        let mut maps = CodeMaps::default();
        let table = "MapId\tReadCode\tTermCode\tConceptId\tDescriptionId\tIS_ASSURED\tEffectiveDate\tMapStatus\r\n\
            1\tH33..\t00\t111\t\t1\t20190101\t1\r\n\
            2\tH33..\t00\t195967001\t\t1\t20200401\t1\r\n\
            3\tH33..\t11\t999\t\t1\t20220101\t1\r\n\
            4\tG20..\t00\t555\t\t0\t20200401\t1\r\n\
            5\tC10F.\t00\t666\t\t1\t20200401\t0\r\n\
            6\tdrug.\t00\t_DRUG\t\t1\t20200401\t1\r\n";
        assert_eq!(maps.load(Table::ReadV2, "t.txt", table).unwrap(), 1);
        assert_eq!(maps.read_v2("H33.."), Some("195967001"), "the preferred term's latest assured map");
        assert_eq!(maps.read_v2("G20.."), None, "not assured");
        assert_eq!(maps.read_v2("C10F."), None, "not current");
        assert_eq!(maps.read_v2("drug."), None, "a placeholder");
        assert!(maps.load(Table::ReadV2, "bad.txt", "h\nnot tab separated").unwrap_err().starts_with("bad.txt:2:"));
    }

    #[test]
    fn the_demo_tables_map_common_codes() {
        let maps = CodeMaps::demo();
        assert_eq!(maps.read_v2("H33.."), Some("195967001"));
        assert_eq!(maps.ctv3("X40J5"), Some("44054006"));
        assert_eq!(maps.read_v2("ZZZZZ"), None);
    }
}
