//! The SAS emoji table: 64 symbols with English descriptions and their
//! translations. Data from the Matrix specification repository
//! (matrix-org/matrix-spec, `data-definitions/sas-emoji.json`, Apache-2.0),
//! kept unchanged in `crates/crypto-core/data/sas-emoji.json`.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use serde::Deserialize;

/// One entry of the table.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct SasEmoji {
    /// Its index (0–63).
    pub number: u8,
    /// The symbol.
    pub emoji: String,
    /// The English description, which clients should show.
    pub description: String,
    /// The description in other languages, by language tag (e.g. `de`).
    #[serde(default)]
    pub translated_descriptions: BTreeMap<String, Option<String>>,
}

impl SasEmoji {
    /// The description in `language`, if the table has it.
    pub fn description_in(&self, language: &str) -> Option<&str> {
        self.translated_descriptions.get(language).and_then(Option::as_deref)
    }
}

const TABLE_JSON: &str = include_str!("../../data/sas-emoji.json");

/// The whole table, in index order (parsed once; the data is part of the
/// crate, and a test checks it parses to 64 entries in order).
pub fn emoji_table() -> &'static [SasEmoji] {
    static TABLE: OnceLock<Vec<SasEmoji>> = OnceLock::new();
    TABLE.get_or_init(|| {
        let mut table: Vec<SasEmoji> = serde_json::from_str(TABLE_JSON).unwrap_or_default();
        table.sort_by_key(|e| e.number);
        table
    })
}

/// The seven emoji for SAS indices (each below 64).
pub(crate) fn emoji_for(indices: [u8; 7]) -> Option<[SasEmoji; 7]> {
    let table = emoji_table();
    let picked: Vec<SasEmoji> = indices.iter().map(|&i| table.get(usize::from(i)).cloned()).collect::<Option<_>>()?;
    picked.try_into().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_has_64_entries_in_order_with_translations() {
        let table = emoji_table();
        assert_eq!(table.len(), 64);
        for (i, entry) in table.iter().enumerate() {
            assert_eq!(usize::from(entry.number), i);
        }
        assert_eq!((table[0].emoji.as_str(), table[0].description.as_str()), ("🐶", "Dog"));
        assert_eq!((table[63].emoji.as_str(), table[63].description.as_str()), ("📌", "Pin"));
        assert_eq!(table[0].description_in("de"), Some("Hund"));
    }
}
