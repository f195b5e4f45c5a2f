//! vCard-temp (XEP-0054) storage: one serialised `<vCard/>` per account.

use super::{Result, Storage};
use rusqlite::OptionalExtension;

impl Storage {
    pub async fn vcard(&self, username: &str) -> Result<Option<String>> {
        let username = username.to_string();
        self.call(move |conn| {
            Ok(conn
                .query_row(
                    "SELECT xml FROM vcards WHERE username = ?1",
                    [&username],
                    |r| r.get(0),
                )
                .optional()?)
        })
        .await
    }

    pub async fn set_vcard(&self, username: &str, xml: String) -> Result<()> {
        let username = username.to_string();
        self.call(move |conn| {
            conn.execute(
                "INSERT OR REPLACE INTO vcards (username, xml) VALUES (?1, ?2)",
                [&username, &xml],
            )?;
            Ok(())
        })
        .await
    }
}
