package export

import (
	"context"
	"fmt"

	"gocloud.dev/blob"
	_ "gocloud.dev/blob/fileblob" // file:// buckets
	_ "gocloud.dev/blob/s3blob"   // s3:// buckets
	"gocloud.dev/gcerrors"
)

// OpenBucket opens the bucket at url: file:///dir (created when missing)
// or s3://bucket?endpoint=...&region=...
func OpenBucket(ctx context.Context, url string) (*blob.Bucket, error) {
	b, err := blob.OpenBucket(ctx, url)
	if err != nil {
		return nil, fmt.Errorf("export: bucket: %w", err)
	}
	return b, nil
}

func isNotFound(err error) bool { return gcerrors.Code(err) == gcerrors.NotFound }
