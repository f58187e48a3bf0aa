module token-vendor.example/consumers/go

go 1.21
