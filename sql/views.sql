-- mmlake cross-campaign views. Applied by Lake.ensure() / apply_views after sql/schema.sql; every
-- statement is idempotent (CREATE ... IF NOT EXISTS / CREATE OR REPLACE VIEW). Views join, never
-- invent: a session or method without output simply has no rows here, and every view works on an
-- empty lake.

-- ------------------------------------------------------------ descriptors
-- One row per session x method x modality x region x element, with campaign, sample and dose from
-- `sessions` and the region's physical descriptors. Regions of sessions without EDS appear once with
-- element/atomic_percent NULL (their d-spacing is still a descriptor).
CREATE OR REPLACE VIEW descriptors AS
SELECT
    s.campaign, s.sample, s.dose_dpa, s.dose_key,
    r.session_id, r.method, r.modality, r.region, r.role, r.role_source,
    r.n_chips, r.area_nm2, r.crystallinity,
    r.d_spacing_nm, r.d_spacing_unc_nm, r.d_spacing_note, r.square_px,
    c.element, c.atomic_percent,
    r.materialization_id
FROM regions AS r
JOIN sessions AS s USING (session_id)
LEFT JOIN region_composition AS c
    ON  c.session_id = r.session_id AND c.method = r.method AND c.modality = r.modality
    AND c.region = r.region AND c.materialization_id = r.materialization_id;

-- ------------------------------------------------------------ composition_shift
-- Ordered vs disordered film, per session x method x modality x element: chip-weighted at.% of each
-- role and percent_diff = 100 * (disordered - ordered) / ordered (an intra-sample, normalised figure,
-- so it compares across samples, doses and campaigns, as the preprint argues in II.B).
-- change_vs_lowest_dose: percent_diff minus that of the same campaign/sample/method/modality/element
-- at the lowest dose that has one (0 at that dose itself): how irradiation moves the shift.
CREATE OR REPLACE VIEW composition_shift AS
SELECT
    s.campaign, s.sample, s.dose_dpa, s.dose_key, o.session_id, o.method, o.modality, o.element,
    o.ordered_at_pct, o.disordered_at_pct, o.percent_diff,
    o.ordered_renorm_pct, o.disordered_renorm_pct, o.percent_diff_renorm,
    o.percent_diff - first_value(o.percent_diff) OVER (
        PARTITION BY s.campaign, s.sample, o.method, o.modality, o.element
        ORDER BY s.dose_dpa ASC, o.session_id) AS change_vs_lowest_dose,
    o.ordered_n_chips, o.disordered_n_chips, o.ordered_n_regions, o.disordered_n_regions,
    o.materialization_id
FROM ordered_disordered_shift AS o
JOIN sessions AS s USING (session_id);

-- ------------------------------------------------------------ lineage
-- For every materialization (root_id), itself (depth 0) and every upstream materialization, recursively
-- through materializations.upstream_ids, back to raw_session; depth = shortest number of hops.
-- raw_files lists the raw files (role, file_name, sha256, bytes) a raw_session materialization stored
-- (from session_files; empty for the other assets).
--     select * from lineage where root_id = '<materialization_id of any row>' order by depth
CREATE OR REPLACE VIEW lineage AS
WITH RECURSIVE edges AS (
    SELECT materialization_id, unnest(upstream_ids) AS upstream_id
    FROM materializations
    WHERE upstream_ids IS NOT NULL
), walk(root_id, materialization_id, depth) AS (
    SELECT materialization_id, materialization_id, 0 FROM materializations
    UNION
    SELECT w.root_id, e.upstream_id, w.depth + 1
    FROM walk AS w
    JOIN edges AS e ON e.materialization_id = w.materialization_id
    WHERE w.depth < 64                      -- guard: the ledger is acyclic, a bad row must not hang a query
), reached AS (
    SELECT root_id, materialization_id, min(depth) AS depth FROM walk GROUP BY ALL
), files AS (
    SELECT materialization_id,
           list({'role': role, 'file_name': file_name, 'sha256': sha256, 'bytes': bytes}
                ORDER BY role, file_name) AS raw_files
    FROM session_files
    GROUP BY ALL
)
SELECT
    r.root_id, r.depth, m.materialization_id, m.asset_key, m.partition_key, m.session_id,
    m.code_version, m.data_version, m.parameters, m.weights, m.device, m.software, m.run_id,
    m.upstream_ids, m.started_at, m.finished_at, m.is_current,
    coalesce(f.raw_files, []) AS raw_files
FROM reached AS r
JOIN materializations AS m ON m.materialization_id = r.materialization_id
LEFT JOIN files AS f ON f.materialization_id = r.materialization_id;

-- One row per raw file a materialization derives from (the raw_session ancestors' session_files):
--     select * from lineage_files where root_id = '<materialization_id>'
CREATE OR REPLACE VIEW lineage_files AS
SELECT l.root_id, l.depth, l.materialization_id, sf.session_id, sf.role, sf.file_name, sf.sha256, sf.bytes
FROM lineage AS l
JOIN session_files AS sf ON sf.materialization_id = l.materialization_id;

-- ------------------------------------------------------------ phase_d_spacing
-- The same material seen by two modalities: for STEM regions whose role names a known phase
-- (phase_roles), the measured FFT d-spacing next to every reference d(hkl) of that phase from the
-- crystal campaign's pymatgen structures; is_closest marks the reference plane nearest the measurement.
CREATE OR REPLACE VIEW phase_d_spacing AS
SELECT
    s.campaign, s.sample, s.dose_dpa, r.session_id, r.method, r.modality, r.region, r.role,
    p.phase, r.d_spacing_nm AS measured_d_nm, r.d_spacing_unc_nm AS measured_unc_nm,
    c.hkl, c.d_ang / 10.0 AS reference_d_nm, c.source AS reference_source,
    r.d_spacing_nm - c.d_ang / 10.0 AS difference_nm,
    row_number() OVER (PARTITION BY r.session_id, r.method, r.modality, r.region, c.source
                       ORDER BY abs(r.d_spacing_nm - c.d_ang / 10.0)) = 1 AS is_closest,
    r.materialization_id
FROM regions AS r
JOIN sessions AS s USING (session_id)
JOIN phase_roles AS p ON p.role = r.role AND (p.campaign IS NULL OR p.campaign = s.campaign)
JOIN crystal_reference_spacings AS c ON c.phase = p.phase
WHERE r.d_spacing_nm IS NOT NULL;

-- ------------------------------------------------------------ sessions and acquisitions (identity)
-- One row per session (acquisition) with its identity and what happened to it last.
--     select * from session_catalog where sample = 'pristine' order by campaign, dose_dpa, acquisition
CREATE OR REPLACE VIEW session_catalog AS
SELECT
    s.campaign, s.sample, s.sample_key, s.dose_dpa, s.dose_key, s.acquisition, s.acquired_at,
    s.session_id, s.partition_key, s.instrument, s.has_haadf, s.has_eds, s.content_sha,
    count(*) OVER (PARTITION BY s.partition_key) AS acquisitions_in_pair,
    (SELECT max(e.event_at) FROM session_events AS e WHERE e.session_id = s.session_id) AS last_event_at,
    (SELECT count(*) FROM session_events AS e WHERE e.session_id = s.session_id AND e.event = 'replaced') AS times_replaced,
    s.materialization_id
FROM sessions AS s;

-- The ordered-vs-disordered shift per sample x dose across its acquisitions (maps): mean, spread
-- (sample standard deviation; NULL with one acquisition) and range of percent_diff, per method,
-- modality and element. The per-acquisition figures are in composition_shift.
--     select * from shift_by_pair where element = 'O' and modality = 'ensemble' order by campaign, sample, dose_dpa
CREATE OR REPLACE VIEW shift_by_pair AS
SELECT
    s.campaign, s.sample, s.sample_key, s.dose_dpa, o.method, o.modality, o.element,
    count(DISTINCT o.session_id)            AS n_acquisitions,
    avg(o.percent_diff)                     AS percent_diff_mean,
    stddev_samp(o.percent_diff)             AS percent_diff_sd,
    min(o.percent_diff)                     AS percent_diff_min,
    max(o.percent_diff)                     AS percent_diff_max,
    avg(o.percent_diff_renorm)              AS percent_diff_renorm_mean,
    stddev_samp(o.percent_diff_renorm)      AS percent_diff_renorm_sd,
    list(o.session_id ORDER BY o.session_id) AS session_ids
FROM ordered_disordered_shift AS o
JOIN sessions AS s USING (session_id)
GROUP BY ALL;

-- Region composition per sample x dose across acquisitions: mean and spread of each role's
-- chip-weighted composition (regions of one segmentation), per method, modality and element.
CREATE OR REPLACE VIEW role_composition_by_pair AS
WITH per_session AS (
    SELECT s.campaign, s.sample, s.sample_key, s.dose_dpa, r.session_id, r.method, r.modality, r.role,
           c.element, sum(c.atomic_percent * r.n_chips) / sum(r.n_chips) AS atomic_percent
    FROM regions AS r
    JOIN region_composition AS c
        ON c.session_id = r.session_id AND c.method = r.method AND c.modality = r.modality AND c.region = r.region
    JOIN sessions AS s ON s.session_id = r.session_id
    WHERE c.atomic_percent IS NOT NULL
    GROUP BY ALL
)
SELECT campaign, sample, sample_key, dose_dpa, method, modality, role, element,
       count(DISTINCT session_id) AS n_acquisitions, avg(atomic_percent) AS atomic_percent_mean,
       stddev_samp(atomic_percent) AS atomic_percent_sd
FROM per_session
GROUP BY ALL;
