-- Question: which regions have no d-spacing, and why (amorphous, single chip, square too small, no HAADF)?
SELECT s.campaign, r.session_id, r.method, r.modality, r.region, r.role, r.n_chips, r.square_px,
       round(r.crystallinity, 2) AS crystallinity, r.d_spacing_note
FROM regions AS r
JOIN sessions AS s USING (session_id)
WHERE r.d_spacing_nm IS NULL
ORDER BY s.campaign, r.session_id, r.method, r.modality, r.region;
