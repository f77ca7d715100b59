-- XEP-0313 message archives: one row per archived copy. `archive` is the
-- owner's bare JID (an account's, or a room's); `seq` orders an archive;
-- `stamp` is in microseconds since the Unix epoch.
CREATE TABLE archive (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    archive TEXT NOT NULL,
    stanza_id TEXT NOT NULL,
    peer TEXT NOT NULL,
    peer_resource TEXT NOT NULL DEFAULT '',
    origin_id TEXT,
    -- The owner sent it (1) or received it (0).
    outgoing SMALLINT NOT NULL,
    stamp BIGINT NOT NULL,
    body TEXT,
    stanza TEXT NOT NULL
);
CREATE UNIQUE INDEX archive_ids ON archive (archive, stanza_id);
CREATE INDEX archive_order ON archive (archive, seq);
CREATE INDEX archive_peer ON archive (archive, peer, seq);
CREATE INDEX archive_stamp ON archive (archive, stamp);
CREATE INDEX archive_origin ON archive (archive, origin_id);
CREATE INDEX archive_age ON archive (stamp);

-- Full-text search on bodies (FTS5, kept in step by triggers).
CREATE VIRTUAL TABLE archive_fts USING fts5 (body, content = 'archive', content_rowid = 'seq');
CREATE TRIGGER archive_fts_insert AFTER INSERT ON archive BEGIN
    INSERT INTO archive_fts (rowid, body) VALUES (new.seq, new.body);
END;
CREATE TRIGGER archive_fts_delete AFTER DELETE ON archive BEGIN
    INSERT INTO archive_fts (archive_fts, rowid, body) VALUES ('delete', old.seq, old.body);
END;
CREATE TRIGGER archive_fts_update AFTER UPDATE OF body ON archive BEGIN
    INSERT INTO archive_fts (archive_fts, rowid, body) VALUES ('delete', old.seq, old.body);
    INSERT INTO archive_fts (rowid, body) VALUES (new.seq, new.body);
END;
