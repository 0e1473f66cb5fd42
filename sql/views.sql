-- mmlake cross-campaign views. Applied by Lake.ensure() / apply_views after sql/schema.sql; every
-- statement is idempotent (CREATE ... IF NOT EXISTS / CREATE OR REPLACE VIEW). Views join, never
-- invent: a session or method without output simply has no rows here, and every view works on an
-- empty lake.

-- ------------------------------------------------------------ descriptors
-- One row per session x method x modality x region x element, with campaign, sample and dose from
-- `sessions` and the region's physical descriptors. Regions of sessions without EDS appear once with
-- element/atomic_percent NULL (their d-spacing is still a descriptor).
-- Default figures are the CORE ones (chips not touching another label, so a neighbouring phase does not
-- bleed in); `basis` says 'whole' where a region has no core chip and the whole-region figure is shown.
-- ci_low/ci_high: 95 % bootstrap interval over the region's chips; counting_se: Poisson counting error.
-- The whole-region figures are in the *_whole columns; core_minus_whole = the difference.
CREATE OR REPLACE VIEW descriptors AS
SELECT
    s.campaign, s.sample, s.dose_dpa, s.dose_key,
    r.session_id, r.method, r.modality, r.region, r.role, r.role_source,
    r.n_chips, r.n_core_chips, r.boundary_share, r.area_nm2, r.crystallinity,
    r.d_spacing_nm, r.d_spacing_unc_nm, r.d_spacing_se_nm, r.d_spacing_ci_low, r.d_spacing_ci_high,
    r.d_spacing_note, r.superlattice_nm, r.square_px,
    c.element,
    CASE WHEN c.atomic_percent_core IS NOT NULL THEN 'core' ELSE 'whole' END AS basis,
    coalesce(c.atomic_percent_core, c.atomic_percent) AS atomic_percent,
    CASE WHEN c.atomic_percent_core IS NOT NULL THEN c.ci_low_core ELSE c.ci_low END AS ci_low,
    CASE WHEN c.atomic_percent_core IS NOT NULL THEN c.ci_high_core ELSE c.ci_high END AS ci_high,
    CASE WHEN c.atomic_percent_core IS NOT NULL THEN c.counting_se_core ELSE c.counting_se END AS counting_se,
    c.atomic_percent AS atomic_percent_whole, c.ci_low AS ci_low_whole, c.ci_high AS ci_high_whole,
    c.atomic_percent_core - c.atomic_percent AS core_minus_whole,
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
-- Default figures are from the regions' CORE chips (`basis` = 'whole' where a role has no core chip);
-- the whole-region figures are in *_whole. ci_low/ci_high: bootstrap interval over chips at ci_level
-- (0.95); significant = the interval excludes 0. pair_*: the same pooled over the acquisitions of the
-- sample x dose (bootstrap over acquisitions, then chips).
-- change_vs_lowest_dose: percent_diff minus that of the same campaign/sample/method/modality/element
-- at the lowest dose that has one (0 at that dose itself): how irradiation moves the shift.
CREATE OR REPLACE VIEW composition_shift AS
WITH d AS (
    SELECT o.*, o.percent_diff_core IS NOT NULL AS has_core FROM ordered_disordered_shift AS o
)
SELECT
    s.campaign, s.sample, s.dose_dpa, s.dose_key, d.session_id, d.method, d.modality, d.element,
    CASE WHEN d.has_core THEN 'core' ELSE 'whole' END AS basis,
    CASE WHEN d.has_core THEN d.ordered_at_pct_core ELSE d.ordered_at_pct END AS ordered_at_pct,
    CASE WHEN d.has_core THEN d.disordered_at_pct_core ELSE d.disordered_at_pct END AS disordered_at_pct,
    CASE WHEN d.has_core THEN d.percent_diff_core ELSE d.percent_diff END AS percent_diff,
    CASE WHEN d.has_core THEN d.ci_low_core ELSE d.ci_low END AS ci_low,
    CASE WHEN d.has_core THEN d.ci_high_core ELSE d.ci_high END AS ci_high,
    CASE WHEN d.has_core THEN d.significant_core ELSE d.significant END AS significant,
    d.ci_level,
    CASE WHEN d.has_core THEN d.ordered_renorm_pct_core ELSE d.ordered_renorm_pct END AS ordered_renorm_pct,
    CASE WHEN d.has_core THEN d.disordered_renorm_pct_core ELSE d.disordered_renorm_pct END AS disordered_renorm_pct,
    CASE WHEN d.has_core THEN d.percent_diff_renorm_core ELSE d.percent_diff_renorm END AS percent_diff_renorm,
    CASE WHEN d.has_core THEN d.renorm_ci_low_core ELSE d.renorm_ci_low END AS renorm_ci_low,
    CASE WHEN d.has_core THEN d.renorm_ci_high_core ELSE d.renorm_ci_high END AS renorm_ci_high,
    (CASE WHEN d.has_core THEN d.percent_diff_core ELSE d.percent_diff END) - first_value(
        CASE WHEN d.has_core THEN d.percent_diff_core ELSE d.percent_diff END) OVER (
        PARTITION BY s.campaign, s.sample, d.method, d.modality, d.element
        ORDER BY s.dose_dpa ASC, d.session_id) AS change_vs_lowest_dose,
    d.ordered_at_pct AS ordered_at_pct_whole, d.disordered_at_pct AS disordered_at_pct_whole,
    d.percent_diff AS percent_diff_whole, d.ci_low AS ci_low_whole, d.ci_high AS ci_high_whole,
    d.significant AS significant_whole, d.percent_diff_renorm AS percent_diff_renorm_whole,
    d.percent_diff_core - d.percent_diff AS core_minus_whole,
    d.ordered_n_chips, d.disordered_n_chips, d.ordered_n_core_chips, d.disordered_n_core_chips,
    d.ordered_n_regions, d.disordered_n_regions,
    d.pair_percent_diff, d.pair_ci_low, d.pair_ci_high, d.pair_significant, d.pair_n_acquisitions, d.pair_basis,
    d.materialization_id
FROM d
JOIN sessions AS s USING (session_id);

-- ------------------------------------------------------------ descriptors pooled per sample x dose
-- The ordered-vs-disordered shift pooled over the acquisitions (sessions) of one sample x dose: mean of
-- the acquisitions' percent_diff and a 95 % interval from a bootstrap over acquisitions and, within
-- each, over chips (core figures where every acquisition has them: pair_basis).
--     select * from composition_shift_pair where element = 'O' and modality = 'ensemble' order by sample, dose_dpa
CREATE OR REPLACE VIEW composition_shift_pair AS
SELECT
    s.campaign, s.sample, s.dose_dpa, s.dose_key, o.method, o.modality, o.element,
    any_value(o.pair_basis) AS basis, any_value(o.pair_percent_diff) AS percent_diff,
    any_value(o.pair_ci_low) AS ci_low, any_value(o.pair_ci_high) AS ci_high,
    any_value(o.pair_significant) AS significant, any_value(o.ci_level) AS ci_level,
    any_value(o.pair_n_acquisitions) AS n_acquisitions, list(DISTINCT o.session_id ORDER BY o.session_id) AS session_ids
FROM ordered_disordered_shift AS o
JOIN sessions AS s USING (session_id)
WHERE o.pair_percent_diff IS NOT NULL
GROUP BY ALL;

-- Each role's composition and d-spacing pooled over the acquisitions of one sample x dose (the role's
-- chip-weighted composition per acquisition, core figures where every acquisition has them; its
-- chip-weighted d-spacing), with 95 % intervals (bootstrap over acquisitions, then chips / tiles).
CREATE OR REPLACE VIEW role_descriptors_pair AS
WITH comp AS (
    SELECT s.campaign, s.sample, s.dose_dpa, s.dose_key, r.method, r.modality, r.role, c.element,
           any_value(c.pair_basis) AS basis, any_value(c.pair_atomic_percent) AS atomic_percent,
           any_value(c.pair_ci_low) AS ci_low, any_value(c.pair_ci_high) AS ci_high,
           any_value(c.pair_n_acquisitions) AS n_acquisitions
    FROM region_composition AS c
    JOIN regions AS r ON r.session_id = c.session_id AND r.method = c.method AND r.modality = c.modality
        AND r.region = c.region AND r.materialization_id = c.materialization_id
    JOIN sessions AS s ON s.session_id = c.session_id
    WHERE c.pair_atomic_percent IS NOT NULL
    GROUP BY ALL
), spacing AS (
    SELECT s.campaign, s.sample, s.dose_dpa, r.method, r.modality, r.role,
           any_value(r.pair_d_spacing_nm) AS d_spacing_nm, any_value(r.pair_d_ci_low) AS d_ci_low,
           any_value(r.pair_d_ci_high) AS d_ci_high
    FROM regions AS r
    JOIN sessions AS s ON s.session_id = r.session_id
    WHERE r.pair_d_spacing_nm IS NOT NULL
    GROUP BY ALL
)
SELECT comp.*, spacing.d_spacing_nm, spacing.d_ci_low, spacing.d_ci_high
FROM comp
LEFT JOIN spacing USING (campaign, sample, dose_dpa, method, modality, role);

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
-- modality and element, from the regions' core chips (basis 'core') where every acquisition has them,
-- else whole regions ('whole'); percent_diff_whole_mean is the whole-region mean either way. The
-- per-acquisition figures are in composition_shift; the pooled interval is in composition_shift_pair.
--     select * from shift_by_pair where element = 'O' and modality = 'ensemble' order by campaign, sample, dose_dpa
CREATE OR REPLACE VIEW shift_by_pair AS
WITH o AS (
    -- core figures (the regions' core chips) where every acquisition of the pair has them, else whole
    SELECT o.*, bool_and(o.percent_diff_core IS NOT NULL) OVER pair AS all_core,
           bool_and(o.percent_diff_renorm_core IS NOT NULL) OVER pair AS all_core_renorm
    FROM ordered_disordered_shift AS o JOIN sessions AS s USING (session_id)
    WINDOW pair AS (PARTITION BY s.sample_key, s.dose_dpa, o.method, o.modality, o.element)
), f AS (
    SELECT o.*, CASE WHEN all_core THEN percent_diff_core ELSE percent_diff END AS pd,
           CASE WHEN all_core_renorm THEN percent_diff_renorm_core ELSE percent_diff_renorm END AS pd_renorm
    FROM o
)
SELECT
    s.campaign, s.sample, s.sample_key, s.dose_dpa, f.method, f.modality, f.element,
    CASE WHEN bool_and(f.all_core) THEN 'core' ELSE 'whole' END AS basis,
    count(DISTINCT f.session_id)            AS n_acquisitions,
    avg(f.pd)                               AS percent_diff_mean,
    stddev_samp(f.pd)                       AS percent_diff_sd,
    min(f.pd)                               AS percent_diff_min,
    max(f.pd)                               AS percent_diff_max,
    avg(f.pd_renorm)                        AS percent_diff_renorm_mean,
    stddev_samp(f.pd_renorm)                AS percent_diff_renorm_sd,
    avg(f.percent_diff)                     AS percent_diff_whole_mean,
    list(f.session_id ORDER BY f.session_id) AS session_ids
FROM f
JOIN sessions AS s USING (session_id)
GROUP BY ALL;

-- Region composition per sample x dose across acquisitions: mean and spread of each role's
-- chip-weighted composition (regions of one segmentation), per method, modality and element: core
-- chips where the role has any (basis 'core'), else all its chips; atomic_percent_whole_mean always
-- from all chips. Intervals pooled over acquisitions: role_descriptors_pair.
CREATE OR REPLACE VIEW role_composition_by_pair AS
WITH per_region AS (
    SELECT s.campaign, s.sample, s.sample_key, s.dose_dpa, r.session_id, r.method, r.modality, r.role,
           c.element, r.n_chips, r.n_core_chips, c.atomic_percent, c.atomic_percent_core
    FROM regions AS r
    JOIN region_composition AS c
        ON c.session_id = r.session_id AND c.method = r.method AND c.modality = r.modality AND c.region = r.region
    JOIN sessions AS s ON s.session_id = r.session_id
    WHERE c.atomic_percent IS NOT NULL
), per_session AS (
    -- chip-weighted over the role's regions: core chips where the role has any, else all its chips
    SELECT campaign, sample, sample_key, dose_dpa, session_id, method, modality, role, element,
           CASE WHEN sum(CASE WHEN atomic_percent_core IS NOT NULL THEN n_core_chips ELSE 0 END) > 0
                THEN sum(atomic_percent_core * n_core_chips) FILTER (WHERE atomic_percent_core IS NOT NULL)
                     / sum(n_core_chips) FILTER (WHERE atomic_percent_core IS NOT NULL)
                ELSE sum(atomic_percent * n_chips) / sum(n_chips) END AS atomic_percent,
           CASE WHEN sum(CASE WHEN atomic_percent_core IS NOT NULL THEN n_core_chips ELSE 0 END) > 0
                THEN 'core' ELSE 'whole' END AS basis,
           sum(atomic_percent * n_chips) / sum(n_chips) AS atomic_percent_whole
    FROM per_region
    GROUP BY ALL
)
SELECT campaign, sample, sample_key, dose_dpa, method, modality, role, element,
       string_agg(DISTINCT basis, '+' ORDER BY basis) AS basis,
       count(DISTINCT session_id) AS n_acquisitions, avg(atomic_percent) AS atomic_percent_mean,
       stddev_samp(atomic_percent) AS atomic_percent_sd, avg(atomic_percent_whole) AS atomic_percent_whole_mean
FROM per_session
GROUP BY ALL;

-- Disordered vs ordered film order parameters with campaign, sample and dose, next to the O shift of
-- the same segmentation (composition_shift, core figures):
--     select campaign, sample, dose_dpa, parameter, ratio, ci_low, ci_high, o_shift_pct
--     from order_contrast_by_session where method = 'fewshot' and modality = 'ensemble'
CREATE OR REPLACE VIEW order_contrast_by_session AS
SELECT s.campaign, s.sample, s.dose_dpa, s.dose_key, s.sample_key, c.session_id, c.method, c.modality,
       c.parameter, c.disordered_mean, c.ordered_mean, c.ratio, c.ci_low, c.ci_high, c.significant, c.level,
       c.n_disordered, c.n_ordered,
       (SELECT cs.percent_diff FROM composition_shift AS cs WHERE cs.session_id = c.session_id
          AND cs.method = c.method AND cs.modality = c.modality AND cs.element = 'O') AS o_shift_pct,
       c.materialization_id
FROM order_contrast AS c
JOIN sessions AS s USING (session_id);
