// implementation pending (helper in progress)
