-- Question: the same sample name (e.g. 'pristine') in several campaigns: how do they compare?
-- Campaigns reuse sample names; the sample key (campaign key + sample) keeps them apart. Per sample,
-- dose and method, one row per campaign side by side: how many acquisitions (maps) there are and the
-- O shift's mean and spread across them. Add `AND sample IN (SELECT sample FROM sessions GROUP BY
-- sample HAVING count(DISTINCT campaign) > 1)` to keep only names that several campaigns use.
SELECT sample, campaign, dose_dpa, method, n_acquisitions,
       round(percent_diff_mean, 2) AS o_shift_mean_pct,
       round(percent_diff_sd, 2)   AS o_shift_sd_pct
FROM shift_by_pair
WHERE element = 'O' AND modality = 'ensemble'
ORDER BY sample, dose_dpa, method, campaign;
