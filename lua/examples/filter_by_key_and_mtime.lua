-- Filter callback (--filter-callback-lua-script): sync only .txt and .csv files modified since 2020,
-- and nothing under tmp/. Return false to leave an object out (event SYNC_FILTERED).
--
-- source_object fields: key, size, last_modified (RFC 3339), version_id, e_tag, checksum_algorithm,
-- checksum_type, is_latest, is_delete_marker.
function filter(source_object)
  local key = source_object.key
  if key:sub(1, 4) == "tmp/" then
    return false
  end
  if not (key:match("%.txt$") or key:match("%.csv$")) then
    return false
  end
  -- RFC 3339 strings of the same form compare in time order.
  return source_object.last_modified >= "2020-01-01T00:00:00Z"
end
