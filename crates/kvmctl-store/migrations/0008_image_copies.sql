-- Issue 9: images are copied to a node's pool on first use there. A copy is recorded only
-- once its upload finished, so a volume left half-written by a crash is never used: it has
-- no row and is uploaded again.
-- Portable SQL: runs unchanged on SQLite and PostgreSQL.
CREATE TABLE image_copies (
    image TEXT NOT NULL,
    node TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (image, node)
);
