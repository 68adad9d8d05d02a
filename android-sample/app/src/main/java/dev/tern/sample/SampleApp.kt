package dev.tern.sample

import android.app.Application
import android.os.Build
import androidx.work.Constraints
import androidx.work.CoroutineWorker
import androidx.work.ExistingWorkPolicy
import androidx.work.NetworkType
import androidx.work.OneTimeWorkRequestBuilder
import androidx.work.WorkManager
import androidx.work.WorkerParameters
import dev.tern.Tracker
import dev.tern.android.TernLifecycle
import java.util.Locale
import java.util.TimeZone

/** Owns the one Tracker of the process. */
class SampleApp : Application() {
    lateinit var tracker: Tracker
        private set

    override fun onCreate() {
        super.onCreate()
        tracker = Tracker(
            dbPath = filesDir.resolve("tern.db").path,
            endpoint = BuildConfig.TERN_ENDPOINT,
            writeKey = BuildConfig.TERN_WRITE_KEY,
            appId = packageName,
            appVersion = BuildConfig.VERSION_NAME,
            appBuild = BuildConfig.VERSION_CODE.toString(),
            osName = "Android",
            osVersion = Build.VERSION.RELEASE,
            deviceManufacturer = Build.MANUFACTURER,
            deviceModel = Build.MODEL,
            locale = Locale.getDefault().toLanguageTag(),
            timezone = TimeZone.getDefault().id,
        )
        // Upload when the app goes to the background.
        TernLifecycle.install(tracker)
        scheduleUploadWhenOnline(this)
    }

    companion object {
        /** Asks WorkManager to run an upload as soon as a network is available. */
        fun scheduleUploadWhenOnline(app: Application) {
            val request = OneTimeWorkRequestBuilder<UploadWorker>()
                .setConstraints(Constraints.Builder().setRequiredNetworkType(NetworkType.CONNECTED).build())
                .build()
            WorkManager.getInstance(app).enqueueUniqueWork("tern-upload", ExistingWorkPolicy.KEEP, request)
        }
    }
}

/** Runs when the network returns: upload what waits, and wait for the acknowledgement. */
class UploadWorker(context: android.content.Context, params: WorkerParameters) : CoroutineWorker(context, params) {
    override suspend fun doWork(): Result {
        val tracker = (applicationContext as SampleApp).tracker
        return if (tracker.flushAndWait(timeoutMs = 20_000)) Result.success() else Result.retry()
    }
}
