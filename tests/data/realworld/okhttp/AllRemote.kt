// Nothing here can be known without running the app: the import fails (exit 2).
import okhttp3.CertificatePinner

fun pinner(config: RemoteConfig) = CertificatePinner.Builder()
    .add(BuildConfig.PINNED_HOST, BuildConfig.PIN_PRIMARY, BuildConfig.PIN_BACKUP)
    .add(config.host(), *config.pins().toTypedArray())
    .build()
