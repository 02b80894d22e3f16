"""The hub's PostgreSQL tables and views (documented in docs/ARCHITECTURE.md,
"Prefecture hub"). Created idempotently by ``meshdesk hub run``; the views are what
the prefecture's staff and reporting tools read.

Times are ``timestamptz`` (UTC); a case's key is ``(city, case_id)``. Nothing here
holds plaintext personal data: ``hub_personal`` keeps a consented case's personal
block exactly as the city sealed it.
"""

from __future__ import annotations

__all__ = ["SCHEMA", "SCHEMA_VERSION", "VIEWS"]

SCHEMA_VERSION = 1

SCHEMA = """
CREATE TABLE IF NOT EXISTS hub_meta (
    key   text PRIMARY KEY,
    value bigint NOT NULL
);
-- Every record taken, once: the event hash is the JetStream message id.
CREATE TABLE IF NOT EXISTS hub_events (
    event_hash  bytea    PRIMARY KEY,
    city        text     NOT NULL,
    pos         bigint   NOT NULL,
    kind        smallint NOT NULL,
    case_id     text,
    author      text     NOT NULL,
    seq         bigint   NOT NULL,
    hlc         bigint   NOT NULL,
    stream_seq  bigint   NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now()
);
-- A case's open metadata: the export's fields, as the city HQ's newest record says.
CREATE TABLE IF NOT EXISTS hub_cases (
    city           text    NOT NULL,
    case_id        text    NOT NULL,
    pos            bigint  NOT NULL,
    created_at     timestamptz,
    updated_at     timestamptz,
    site           text,
    category       text,
    urgency        text,
    status         text,
    department     text,
    consent        text,
    referrals      text,
    events         integer NOT NULL,
    referral_count integer NOT NULL,
    erased         boolean NOT NULL DEFAULT false,
    PRIMARY KEY (city, case_id)
);
-- Sealed personal blocks of cases whose citizen consented to "prefecture".
CREATE TABLE IF NOT EXISTS hub_personal (
    city    text   NOT NULL,
    case_id text   NOT NULL,
    pos     bigint NOT NULL,
    sealed  bytea  NOT NULL,
    PRIMARY KEY (city, case_id)
);
-- Erased cases: their sealed block is gone and never taken again.
CREATE TABLE IF NOT EXISTS hub_erasures (
    city      text NOT NULL,
    case_id   text NOT NULL,
    erased_at timestamptz NOT NULL,
    PRIMARY KEY (city, case_id)
);
CREATE TABLE IF NOT EXISTS hub_announcements (
    city      text    NOT NULL,
    notice_id text    NOT NULL,
    posted_at timestamptz NOT NULL,
    severity  text    NOT NULL,
    title_ja  text,
    title_en  text,
    body_ja   text,
    body_en   text,
    sites     text[]  NOT NULL,
    exercise  boolean NOT NULL,
    PRIMARY KEY (city, notice_id)
);
-- Per city: when the hub last took a record from it, and the newest event time.
CREATE TABLE IF NOT EXISTS hub_cities (
    city          text   PRIMARY KEY,
    records       bigint NOT NULL,
    last_contact  timestamptz NOT NULL,
    last_event_at timestamptz
);
"""

_OPEN = "status IS NULL OR status NOT IN ('resolved', 'closed')"

VIEWS = f"""
CREATE OR REPLACE VIEW hub_cases_by_municipality AS
    SELECT city, count(*) AS cases, count(*) FILTER (WHERE {_OPEN}) AS open_cases
    FROM hub_cases GROUP BY city;
CREATE OR REPLACE VIEW hub_cases_by_shelter AS
    SELECT city, site, count(*) AS cases, count(*) FILTER (WHERE {_OPEN}) AS open_cases
    FROM hub_cases GROUP BY city, site;
CREATE OR REPLACE VIEW hub_cases_by_category AS
    SELECT city, category, count(*) AS cases FROM hub_cases GROUP BY city, category;
CREATE OR REPLACE VIEW hub_cases_by_urgency AS
    SELECT city, urgency, count(*) AS cases FROM hub_cases GROUP BY city, urgency;
CREATE OR REPLACE VIEW hub_cases_by_status AS
    SELECT city, status, count(*) AS cases FROM hub_cases GROUP BY city, status;
-- An older hub named open_cases "backlog"; CREATE OR REPLACE cannot rename a column.
DO $$ BEGIN
    IF EXISTS (SELECT 1 FROM information_schema.columns
               WHERE table_schema = current_schema() AND table_name = 'hub_city_status'
                 AND column_name = 'backlog') THEN
        DROP VIEW hub_city_status;
    END IF;
END $$;
-- Per city: last contact, and its open cases (not resolved or closed) as the city
-- holds them: the work still ahead of it, not records in transit.
CREATE OR REPLACE VIEW hub_city_status AS
    SELECT c.city, c.last_contact, c.last_event_at, c.records,
           coalesce(k.cases, 0) AS cases, coalesce(k.open_cases, 0) AS open_cases,
           coalesce(k.immediate, 0) AS immediate_open
    FROM hub_cities AS c LEFT JOIN (
        SELECT city, count(*) AS cases,
               count(*) FILTER (WHERE {_OPEN}) AS open_cases,
               count(*) FILTER (WHERE urgency = 'immediate' AND ({_OPEN})) AS immediate
        FROM hub_cases GROUP BY city
    ) AS k USING (city);
"""
