-- Question: where does one descriptor row come from? Its full lineage back to the raw files.
-- Takes the O row of the first film_ordered region in the lake (replace the subquery by a literal
-- materialization_id for another row) and lists every upstream materialization with its code version,
-- parameters, weights and device, and for raw_session the raw files' sha256.
WITH target AS (
    SELECT materialization_id
    FROM descriptors
    WHERE role = 'film_ordered' AND element = 'O'
    ORDER BY campaign, sample, dose_dpa, method, modality, region
    LIMIT 1
)
SELECT l.depth, l.asset_key, l.materialization_id, l.session_id, l.code_version, l.data_version,
       l.parameters, l.weights, l.device, l.finished_at,
       f.role AS file_role, f.file_name, f.sha256
FROM lineage AS l
LEFT JOIN lineage_files AS f
    ON f.root_id = l.root_id AND f.materialization_id = l.materialization_id
WHERE l.root_id = (SELECT materialization_id FROM target)
ORDER BY l.depth, l.asset_key, f.file_name;
