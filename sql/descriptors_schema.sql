-- ============================================================ descriptors (issue 5)
-- Region descriptors (mmlake.descriptors, mmlake.roles): written by the `region_descriptors` asset with
-- Lake.replace_partition(..., scope={"session_id": sid}) -- all three tables in one transaction, one
-- materialization_id. A region = the chips of one segmentation (method x modality) with one label.

CREATE TABLE IF NOT EXISTS regions (
    session_id         VARCHAR NOT NULL,
    method             VARCHAR NOT NULL,   -- louvain, agglomerative, fewshot, truth (ground truth), ...
    modality           VARCHAR NOT NULL,   -- haadf, eds, ensemble, ensemble_auto
    region             INTEGER NOT NULL,   -- the label
    role               VARCHAR,            -- substrate, film_ordered, film_disordered, cap, interface, film, unknown
    role_source        VARCHAR,            -- class_names (few-shot/truth), rule (clustering), manifest (roles:)
    role_reason        VARCHAR,            -- the numbers that decided the role
    n_chips            INTEGER NOT NULL,
    area_nm2           DOUBLE,             -- n_chips * (chip_px * pixel_size_nm)^2
    eds_counts         DOUBLE,             -- counts of the region's summed spectrum; NULL without EDS
    d_spacing_nm       DOUBLE,             -- lattice period of the FFT of the largest square inside the region
    d_spacing_unc_nm   DOUBLE,             -- width-based (resolution) uncertainty of it
    d_spacing_note     VARCHAR,            -- why d_spacing_nm is NULL (amorphous, single chip, square too small, no HAADF)
    lattice_strength   DOUBLE,             -- ln(peak/background ratio / lattice threshold) of the square; > 0 = lattice
    crystallinity      DOUBLE,             -- fraction of the region's chips whose FFT window shows a 2-D lattice
    square_px          INTEGER,            -- side of the largest square inside the region, px
    square_row         INTEGER,            -- its top-left chip (row, col)
    square_col         INTEGER,
    materialization_id VARCHAR NOT NULL
);

-- Cliff-Lorimer at.% of each region's SUMMED spectrum (exspy); one row per declared element plus
-- 'Extraneous' (every other quantified element), adding up to 100. NULL where the summed spectrum has
-- no counts. No rows for sessions without EDS.
CREATE TABLE IF NOT EXISTS region_composition (
    session_id         VARCHAR NOT NULL,
    method             VARCHAR NOT NULL,
    modality           VARCHAR NOT NULL,
    region             INTEGER NOT NULL,
    element            VARCHAR NOT NULL,
    atomic_percent     DOUBLE,
    materialization_id VARCHAR NOT NULL
);

-- The preprint's comparison (II.B, Figs. 4-5): chip-weighted composition of all film_disordered vs all
-- film_ordered regions of one segmentation, percent_diff = 100 * (disordered - ordered) / ordered.
-- Rows only where a segmentation has both roles. The view `composition_shift` adds campaign/sample/dose.
CREATE TABLE IF NOT EXISTS ordered_disordered_shift (
    session_id           VARCHAR NOT NULL,
    method               VARCHAR NOT NULL,
    modality             VARCHAR NOT NULL,
    element              VARCHAR NOT NULL,
    ordered_at_pct       DOUBLE,
    disordered_at_pct    DOUBLE,
    percent_diff         DOUBLE,
    ordered_renorm_pct   DOUBLE,             -- the same compositions renormalised over the compared elements
    disordered_renorm_pct DOUBLE,            -- (La + Fe + O = 100): removes dilution by cap/substrate signal
    percent_diff_renorm  DOUBLE,
    ordered_n_chips      INTEGER,
    disordered_n_chips   INTEGER,
    ordered_n_regions    INTEGER,
    disordered_n_regions INTEGER,
    materialization_id   VARCHAR NOT NULL
);
