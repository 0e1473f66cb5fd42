-- Question: which chips anywhere in the lake (any session, any campaign) look most like a given chip?
-- Cosine similarity of HAADF embeddings (haadf_embeddings.vector, one encoder) centred on the
-- encoder's lake-wide mean vector (see mmlake/similar.py for why), an exact scan in DuckDB, joined
-- with sessions (campaign, sample, dose) and the chip's region role, taken from the
-- first segmentation of its session that has regions: few-shot ensemble, few-shot ensemble_auto,
-- Louvain ensemble, agglomerative ensemble, then the haadf modality of each, then ground truth.
-- Edit `params`: as written it asks about chip (row 12, col 9) of the lake's first session, fft encoder.
-- `mmlake similar SESSION ROW COL [-n N] [--encoder E]` answers the same question from a cached
-- index of normalised vectors (under a second at 1,000,000 chips: bench/similar.py) and draws
-- thumbnails; this scan is the baseline it is measured against.
WITH params AS (
    SELECT (SELECT min(session_id) FROM chip_grids) AS session_id, 12 AS row, 9 AS col,
           'fft' AS encoder, 10 AS n
),
query AS (
    SELECT e.session_id, e.chip_index, e.encoder, e.vector
    FROM params p
    JOIN chip_grids g ON g.session_id = p.session_id AND p.row < g.n_rows AND p.col < g.n_cols
    JOIN haadf_embeddings e ON e.session_id = p.session_id AND e.encoder = p.encoder
                           AND e.chip_index = p.row * g.n_cols + p.col
),
mu AS (  -- the encoder's mean embedding over every chip in the lake
    SELECT list(m ORDER BY i) AS mean
    FROM (SELECT i, avg(x) AS m
          FROM (SELECT unnest(range(1, len(e.vector) + 1)) AS i, unnest(e.vector) AS x
                FROM haadf_embeddings e JOIN query q ON e.encoder = q.encoder)
          GROUP BY i)
),
scored AS (
    SELECT e.session_id, e.chip_index,
           coalesce(nullif(list_cosine_similarity(
               list_transform(e.vector, lambda x, i: x - mu.mean[i]),
               list_transform(q.vector, lambda x, i: x - mu.mean[i])), 'NaN'::DOUBLE), 0) AS similarity
    FROM haadf_embeddings e JOIN query q ON e.encoder = q.encoder CROSS JOIN mu
    WHERE NOT (e.session_id = q.session_id AND e.chip_index = q.chip_index)
    ORDER BY similarity DESC, e.session_id, e.chip_index
    LIMIT (SELECT n FROM params)
),
roles AS (
    SELECT l.session_id, l.chip_index, r.role, l.method || '/' || l.modality AS role_source,
           row_number() OVER (PARTITION BY l.session_id, l.chip_index ORDER BY
               CASE l.method || '/' || l.modality
                   WHEN 'fewshot/ensemble' THEN 1 WHEN 'fewshot/ensemble_auto' THEN 2
                   WHEN 'louvain/ensemble' THEN 3 WHEN 'agglomerative/ensemble' THEN 4
                   WHEN 'fewshot/haadf' THEN 5 WHEN 'louvain/haadf' THEN 6
                   WHEN 'agglomerative/haadf' THEN 7 WHEN 'truth/truth' THEN 8 ELSE 9 END) AS pick
    FROM scored sc
    JOIN segment_labels l ON l.session_id = sc.session_id AND l.chip_index = sc.chip_index
    JOIN regions r ON r.session_id = l.session_id AND r.method = l.method AND r.modality = l.modality
                  AND r.region = l.label
)
SELECT row_number() OVER (ORDER BY sc.similarity DESC, sc.session_id, sc.chip_index) AS rank,
       round(sc.similarity, 4) AS similarity, s.campaign, s.sample, s.dose_dpa, sc.session_id,
       c.row, c.col, sc.chip_index, r.role, r.role_source, c.truth_label
FROM scored sc
JOIN sessions s USING (session_id)
LEFT JOIN chips c ON c.session_id = sc.session_id AND c.chip_index = sc.chip_index
LEFT JOIN roles r ON r.session_id = sc.session_id AND r.chip_index = sc.chip_index AND r.pick = 1
ORDER BY rank;
