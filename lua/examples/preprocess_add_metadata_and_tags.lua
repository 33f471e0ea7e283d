-- Preprocess callback (--preprocess-callback-lua-script): runs just before an object is written to S3
-- (never in a dry run). Edit upload_metadata and return true, upload_metadata; return false to cancel
-- the object (event SYNC_CANCEL). The key and the content cannot be changed.
--
-- Modifiable: acl, cache_control, content_disposition, content_encoding, content_language,
-- content_type, expires_string (RFC 3339), metadata (table), request_payer, storage_class,
-- website_redirect_location, tagging ("k1=v1&k2=v2").
function preprocess_callback(source_object, upload_metadata)
  if source_object.key:match("%.secret$") then
    return false, upload_metadata
  end
  upload_metadata.metadata["origin-key"] = source_object.key
  upload_metadata.metadata["origin-size"] = tostring(source_object.content_length)
  upload_metadata.tagging = "pipeline=ingest&size=" .. tostring(source_object.content_length)
  if source_object.key:match("%.json$") then
    upload_metadata.content_type = "application/json"
    upload_metadata.cache_control = "max-age=60"
  end
  return true, upload_metadata
end
